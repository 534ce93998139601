"""Choosing the parser: file extension first, then content type, else plain text."""

from __future__ import annotations

import pytest

from shardrag.errors import UnsupportedFormat
from shardrag.ingest import SUPPORTED_EXTENSIONS, parse

MARKDOWN = b"# Title\n\nbody"


def test_supported_extensions() -> None:
    assert {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf"} == SUPPORTED_EXTENSIONS


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("a.txt", "text/plain"),
        ("a.TEXT", "text/plain"),
        ("README.md", "text/markdown"),
        ("guide.Markdown", "text/markdown"),
        ("page.HTM", "text/html"),
        ("page.html", "text/html"),
        ("C:\\docs\\Guide.MD", "text/markdown"),
    ],
)
def test_extension_picks_the_parser_case_insensitively(filename: str, content_type: str) -> None:
    assert parse(MARKDOWN, filename).content_type == content_type


def test_extension_wins_over_content_type() -> None:
    assert parse(MARKDOWN, "a.md", "text/plain").content_type == "text/markdown"


@pytest.mark.parametrize("filename", [None, "README", "notes.unknownext"])
def test_content_type_decides_without_a_known_extension(filename: str | None) -> None:
    doc = parse(MARKDOWN, filename, "text/markdown; charset=utf-8")

    assert doc.content_type == "text/markdown"
    assert doc.title == "Title"


@pytest.mark.parametrize("content_type", [None, "application/octet-stream"])
def test_no_extension_and_no_content_type_is_plain_text(content_type: str | None) -> None:
    doc = parse(MARKDOWN, None, content_type)

    assert doc.content_type == "text/plain"
    assert doc.blocks[0].text == "# Title"


def test_unsupported_extension_names_it_and_the_supported_ones() -> None:
    with pytest.raises(UnsupportedFormat) as raised:
        parse(b"PK\x03\x04", "report.DOCX")

    assert "'.docx'" in raised.value.message
    assert ".md" in raised.value.message and ".pdf" in raised.value.message
    assert raised.value.details["extension"] == ".docx"
    assert raised.value.code == "unsupported_format"


def test_unsupported_extension_with_uninformative_content_type_is_unsupported() -> None:
    with pytest.raises(UnsupportedFormat, match=r"'\.xlsx'"):
        parse(b"data", "sheet.xlsx", "application/octet-stream")


def test_unsupported_content_type_without_extension_is_unsupported() -> None:
    with pytest.raises(UnsupportedFormat, match="image/png"):
        parse(b"\x89PNG", "upload", "image/png")
