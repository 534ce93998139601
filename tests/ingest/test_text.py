"""Plain text: paragraphs between blank lines."""

from __future__ import annotations

from shardrag.ingest import parse


def test_paragraphs_are_split_on_blank_lines() -> None:
    doc = parse(b"First paragraph.\n\nSecond paragraph.\n   \n\n\nThird.", "a.txt")

    assert [b.text for b in doc.blocks] == ["First paragraph.", "Second paragraph.", "Third."]


def test_single_newlines_and_runs_of_whitespace_become_one_space() -> None:
    doc = parse(b"a line that\nwraps   here\tand\r\nthere", "a.txt")

    assert [b.text for b in doc.blocks] == ["a line that wraps here and there"]


def test_plain_text_has_no_headings_title_or_pages() -> None:
    doc = parse(b"# not a heading\n\nbody", "a.txt")

    assert doc.title is None
    assert doc.content_type == "text/plain"
    assert [(b.text, b.headings, b.page) for b in doc.blocks] == [
        ("# not a heading", (), None),
        ("body", (), None),
    ]
