"""Plain text: paragraphs separated by blank lines, no headings."""

from __future__ import annotations

from shardrag.ingest.decoding import decode_text
from shardrag.ingest.structure import BlockBuilder, paragraphs
from shardrag.models import ParsedDocument

CONTENT_TYPE = "text/plain"


def parse_text(data: bytes) -> ParsedDocument:
    """One block per paragraph (text between blank lines), whitespace collapsed.

    Single newlines inside a paragraph are hard wraps, not structure, so they become spaces.
    """
    decoded = decode_text(data)
    builder = BlockBuilder()
    for paragraph in paragraphs(decoded.text):
        builder.add(paragraph)
    return builder.document(
        content_type=CONTENT_TYPE,
        encoding=decoded.encoding,
        empty_message="the text document has no text",
    )
