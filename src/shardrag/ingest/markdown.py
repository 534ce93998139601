"""Markdown (CommonMark and tables): blocks under their ATX/Setext heading path."""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.token import Token

from shardrag.ingest.decoding import decode_text
from shardrag.ingest.html import add_fragment
from shardrag.ingest.structure import BlockBuilder, collapse_whitespace
from shardrag.models import ParsedDocument

CONTENT_TYPE = "text/markdown"

_MARKDOWN = MarkdownIt("commonmark").enable("table")
# Inline tokens whose content is text a reader sees; markup tokens (emphasis, link and
# raw-HTML tags) contribute nothing, and line breaks become spaces.
_TEXT_INLINES = frozenset({"text", "code_inline", "image"})
_BREAK_INLINES = frozenset({"softbreak", "hardbreak"})


def parse_markdown(data: bytes) -> ParsedDocument:
    """One block per paragraph, list-item paragraph, code block and table row.

    Each paragraph of a list item is its own block, nested items included, so a long list
    can be cut between items. Code (fenced or indented) is kept verbatim. Inline markup is
    reduced to its text: ``**bold**`` is ``bold``, ``[text](url)`` is ``text``, an image is
    its alt text. Headings are not blocks; they form the ``headings`` path. The title is
    the first level-1 heading. Raw HTML blocks add their text, and their h1–h6 headings.
    """
    decoded = decode_text(data)
    builder = BlockBuilder()
    title: str | None = None
    heading_level: int | None = None
    row: list[str] | None = None
    for token in _MARKDOWN.parse(decoded.text):
        if token.type == "heading_open":
            heading_level = int(token.tag[1:])
        elif token.type == "heading_close":
            heading_level = None
        elif token.type == "inline":
            text = _inline_text(token)
            if heading_level is not None:
                builder.heading(heading_level, text)
                if heading_level == 1 and title is None:
                    title = collapse_whitespace(text) or None
            elif row is not None:
                row.append(collapse_whitespace(text))
            else:
                builder.add(text)
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and row is not None:
            builder.add(" | ".join(cell for cell in row if cell))
            row = None
        elif token.type in ("fence", "code_block"):
            builder.add(token.content, verbatim=True)
        elif token.type == "html_block":
            add_fragment(token.content, builder)
    return builder.document(
        content_type=CONTENT_TYPE,
        title=title,
        encoding=decoded.encoding,
        empty_message="the Markdown document has no text outside markup",
    )


def _inline_text(token: Token) -> str:
    parts: list[str] = []
    for child in token.children or ():
        if child.type in _TEXT_INLINES:
            parts.append(child.content)
        elif child.type in _BREAK_INLINES:
            parts.append(" ")
    return "".join(parts)
