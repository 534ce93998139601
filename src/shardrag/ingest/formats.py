"""Which parser reads a document: by file extension, else by content type."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import PurePosixPath

from shardrag.errors import UnsupportedFormat
from shardrag.models import ParsedDocument

Parser = Callable[[bytes], ParsedDocument]


def _lazy(module: str, function: str) -> Parser:
    """A parser whose module (and its HTML or PDF library) is imported on first use, so that
    processes that never parse (a CLI query, an index node) do not pay for loading it."""

    def parse_with(data: bytes) -> ParsedDocument:
        parser: Parser = getattr(importlib.import_module(module), function)
        return parser(data)

    parse_with.__name__ = function
    return parse_with


parse_text = _lazy("shardrag.ingest.text", "parse_text")
parse_markdown = _lazy("shardrag.ingest.markdown", "parse_markdown")
parse_html = _lazy("shardrag.ingest.html", "parse_html")
parse_pdf = _lazy("shardrag.ingest.pdf", "parse_pdf")

_PARSERS_BY_EXTENSION: dict[str, Parser] = {
    ".txt": parse_text,
    ".text": parse_text,
    ".md": parse_markdown,
    ".markdown": parse_markdown,
    ".html": parse_html,
    ".htm": parse_html,
    ".pdf": parse_pdf,
}
_PARSERS_BY_CONTENT_TYPE: dict[str, Parser] = {
    "text/plain": parse_text,
    "text/markdown": parse_markdown,
    "text/x-markdown": parse_markdown,
    "text/html": parse_html,
    "application/xhtml+xml": parse_html,
    "application/pdf": parse_pdf,
}
# What clients send when they know nothing about the bytes: no more informative than silence.
_UNINFORMATIVE_CONTENT_TYPES = frozenset({"", "application/octet-stream"})

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_PARSERS_BY_EXTENSION)
SUPPORTED_CONTENT_TYPES: frozenset[str] = frozenset(_PARSERS_BY_CONTENT_TYPE)


def parser_for(filename: str | None, content_type: str | None) -> Parser:
    """The parser for a document named ``filename`` and sent as ``content_type``.

    The extension decides (case-insensitively); a name without a known extension defers to
    the content type (parameters such as ``charset`` ignored). With neither, the bytes are
    read as plain text, which still rejects binary content.
    """
    extension = _extension(filename)
    media_type = (content_type or "").split(";")[0].strip().lower()
    if extension in _PARSERS_BY_EXTENSION:
        return _PARSERS_BY_EXTENSION[extension]
    if media_type in _PARSERS_BY_CONTENT_TYPE:
        return _PARSERS_BY_CONTENT_TYPE[media_type]
    supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
    if extension:
        raise UnsupportedFormat(
            f"unsupported file extension {extension!r}; supported: {supported}",
            extension=extension,
            supported=sorted(SUPPORTED_EXTENSIONS),
        )
    if media_type not in _UNINFORMATIVE_CONTENT_TYPES:
        raise UnsupportedFormat(
            f"unsupported content type {media_type!r}; supported: "
            f"{', '.join(sorted(SUPPORTED_CONTENT_TYPES))} (or a file name ending {supported})",
            content_type=media_type,
            supported=sorted(SUPPORTED_CONTENT_TYPES),
        )
    return parse_text


def parse(
    data: bytes, filename: str | None = None, content_type: str | None = None
) -> ParsedDocument:
    """Parse a document's bytes into blocks with structure hints (headings, pages, title).

    Raises ``UnsupportedFormat``, ``EmptyDocument``, ``BinaryContent`` or
    ``UnparseableDocument`` (all ``InvalidInput``) for documents that cannot be indexed.
    """
    return parser_for(filename, content_type)(data)


def _extension(filename: str | None) -> str:
    if not filename:
        return ""
    # Clients send Windows paths too; only the last component's suffix names the format.
    return PurePosixPath(filename.replace("\\", "/")).suffix.lower()
