"""Markdown: blocks under their heading path, inline markup reduced to text."""

from __future__ import annotations

import pytest

from shardrag.errors import EmptyDocument
from shardrag.ingest import parse
from shardrag.models import ParsedDocument


def md(source: str) -> ParsedDocument:
    return parse(source.encode(), "doc.md")


def test_blocks_carry_the_path_of_enclosing_headings() -> None:
    doc = md(
        "# Guide\n\nintro\n\n## Install\n\nsteps\n\n### On Linux\n\napt\n\n"
        "## Usage\n\nrun it\n\n# Appendix\n\nextra"
    )

    assert [(b.text, b.headings) for b in doc.blocks] == [
        ("intro", ("Guide",)),
        ("steps", ("Guide", "Install")),
        ("apt", ("Guide", "Install", "On Linux")),
        ("run it", ("Guide", "Usage")),
        ("extra", ("Appendix",)),
    ]


def test_setext_headings_count_like_atx_headings() -> None:
    doc = md("Guide\n=====\n\nintro\n\nInstall\n-------\n\nsteps")

    assert [(b.text, b.headings) for b in doc.blocks] == [
        ("intro", ("Guide",)),
        ("steps", ("Guide", "Install")),
    ]


def test_text_before_any_heading_has_an_empty_path() -> None:
    assert md("preface\n\n# Part\n\nbody").blocks[0].headings == ()


def test_title_is_the_first_level_one_heading() -> None:
    assert md("## Sub first\n\nx\n\n# The *Title*\n\ny\n\n# Later").title == "The Title"
    assert md("## Only a subheading\n\nx").title is None


def test_inline_markup_is_reduced_to_its_text() -> None:
    doc = md(
        'Some **bold**, _em_, `code`, [a link](http://example.com "t"), '
        "![an image](i.png), <span>raw</span> &amp; <https://x.org>\\\nnext line"
    )

    assert doc.blocks[0].text == (
        "Some bold, em, code, a link, an image, raw & https://x.org next line"
    )


def test_headings_lose_their_inline_markup_too() -> None:
    assert md("# Use `pip` **now**\n\nx").blocks[0].headings == ("Use pip now",)


def test_list_items_are_blocks_of_their_own_nested_ones_included() -> None:
    doc = md("- first *item*\n- second\n  - nested\n\n1. one\n2. two")

    assert [b.text for b in doc.blocks] == ["first item", "second", "nested", "one", "two"]


def test_code_fences_are_kept_verbatim() -> None:
    code = "def f(x):\n    return x  *  2\n\n# not a heading"

    doc = md(f"# Code\n\n```python\n{code}\n```\n\n    indented block\n      keeps  spacing\n")

    assert [b.text for b in doc.blocks] == [code, "indented block\n  keeps  spacing"]
    assert doc.blocks[0].headings == ("Code",)


def test_table_rows_are_blocks_with_cells_separated() -> None:
    doc = md("| Name | Size |\n|------|-----:|\n| **a** | 1 |\n| b | |\n")

    assert [b.text for b in doc.blocks] == ["Name | Size", "a | 1", "b"]


def test_blockquote_paragraphs_are_blocks() -> None:
    assert [b.text for b in md("> quoted\n> text\n\n> second").blocks] == [
        "quoted text",
        "second",
    ]


def test_raw_html_blocks_contribute_their_text_and_headings_not_their_markup() -> None:
    doc = md(
        '<h1 align="center">Shardrag</h1>\n\n<div align="center">\n<b>Shard</b>rag'
        "<script>x()</script>\n</div>\n\n## Usage\n\nafter"
    )

    assert [(b.text, b.headings) for b in doc.blocks] == [
        ("Shardrag", ("Shardrag",)),
        ("after", ("Shardrag", "Usage")),
    ]


def test_markdown_document_records_type_and_encoding() -> None:
    doc = parse(b"caf\xe9", "a.md")

    assert (doc.content_type, doc.encoding, doc.blocks[0].text) == (
        "text/markdown",
        "cp1252",
        "café",
    )


@pytest.mark.parametrize("source", ["# Only\n\n## Headings", "---\n\n***", "<!-- comment -->"])
def test_markdown_without_text_is_empty(source: str) -> None:
    with pytest.raises(EmptyDocument):
        md(source)
