"""Ingestion: document bytes to parsed blocks (``parse``) to token-sized chunks (``Chunker``)."""

from shardrag.ingest.chunker import Chunker
from shardrag.ingest.formats import SUPPORTED_EXTENSIONS, parse, parser_for

__all__ = ["SUPPORTED_EXTENSIONS", "Chunker", "parse", "parser_for"]
