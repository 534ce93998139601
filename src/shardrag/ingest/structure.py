"""How parsers build a document: text blocks under the path of headings they sit in."""

from __future__ import annotations

import re

from shardrag.errors import EmptyDocument
from shardrag.models import Block, ParsedDocument

_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+")
_BLANK_LINE = re.compile(r"\n[ \t\f\v]*\n")


def collapse_whitespace(text: str) -> str:
    """``text`` with every run of whitespace (newlines, tabs, nbsp ...) as one space."""
    return " ".join(text.split())


def paragraphs(text: str) -> list[str]:
    """``text`` cut at blank lines, the paragraph convention of plain text and PDF pages."""
    return _BLANK_LINE.split(text)


class BlockBuilder:
    """Collects a document's blocks in reading order, tagging each with its heading path.

    A heading of level n closes every open heading of level n or deeper, so the path is
    always the chain of headings enclosing the next block (``("Guide", "Install")``).
    """

    def __init__(self) -> None:
        self._blocks: list[Block] = []
        self._open_headings: list[tuple[int, str]] = []

    @property
    def headings(self) -> tuple[str, ...]:
        """The heading path the next block is added under, outermost first."""
        return tuple(text for _, text in self._open_headings)

    def heading(self, level: int, text: str) -> None:
        """Enter a heading of ``level`` (1 is outermost); an empty heading only closes."""
        while self._open_headings and self._open_headings[-1][0] >= level:
            self._open_headings.pop()
        title = collapse_whitespace(text)
        if title:
            self._open_headings.append((level, title))

    def add(self, text: str, *, verbatim: bool = False, page: int | None = None) -> None:
        """Add a block under the current headings; blank text adds nothing.

        Whitespace is collapsed to single spaces unless ``verbatim`` (code, preformatted
        text), which keeps lines and indentation and drops only surrounding blank lines.
        """
        body = (
            _LEADING_BLANK_LINES.sub("", text.rstrip()) if verbatim else collapse_whitespace(text)
        )
        if body.strip():
            self._blocks.append(Block(text=body, headings=self.headings, page=page))

    def document(
        self,
        *,
        content_type: str,
        title: str | None = None,
        encoding: str | None = None,
        empty_message: str,
    ) -> ParsedDocument:
        """The parsed document; ``EmptyDocument(empty_message)`` if no block has text."""
        if not self._blocks:
            raise EmptyDocument(empty_message)
        clean_title = collapse_whitespace(title) if title else ""
        return ParsedDocument(
            blocks=list(self._blocks),
            title=clean_title or None,
            content_type=content_type,
            encoding=encoding,
        )
