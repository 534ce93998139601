"""PDF: page text with page numbers; broken, encrypted and scanned files rejected clearly."""

from __future__ import annotations

import io
import logging
import random

import pytest
from pypdf import PdfReader, PdfWriter
from reportlab.pdfgen import canvas  # type: ignore[import-untyped]

from shardrag.errors import EmptyDocument, UnparseableDocument
from shardrag.ingest import parse


def make_pdf(
    pages: list[list[str]], *, title: str | None = None, encrypt: str | None = None
) -> bytes:
    """A real PDF with one text line per string; a page with no lines gets only a drawing."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, encrypt=encrypt)
    if title:
        pdf.setTitle(title)
    for lines in pages:
        if not lines:
            pdf.rect(100, 100, 200, 200, fill=1)
        for row, line in enumerate(lines):
            pdf.drawString(72, 760 - 16 * row, line)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


GOOD = make_pdf(
    [["Shard maps assign tenants.", "Replicas follow the map."], ["Second page text."]],
    title="Operations Manual",
)


def test_blocks_carry_their_one_based_page_number() -> None:
    doc = parse(GOOD, "manual.pdf")

    assert [(b.text, b.page) for b in doc.blocks] == [
        ("Shard maps assign tenants. Replicas follow the map.", 1),
        ("Second page text.", 2),
    ]
    assert doc.content_type == "application/pdf"
    assert doc.encoding is None


def test_title_comes_from_metadata() -> None:
    assert parse(GOOD, "manual.pdf").title == "Operations Manual"
    assert parse(make_pdf([["text"]]), "untitled.pdf").title is None


def test_truncated_pdf_is_unparseable_with_the_reason() -> None:
    with pytest.raises(UnparseableDocument, match="cannot be read") as raised:
        parse(GOOD[: len(GOOD) // 2], "manual.pdf")

    assert raised.value.code == "unparseable_document"
    assert raised.value.details["reason"]


def test_random_bytes_named_pdf_are_unparseable() -> None:
    with pytest.raises(UnparseableDocument):
        parse(random.Random(3).randbytes(2048), "scan.pdf")


def test_pypdf_warnings_about_broken_files_are_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG), pytest.raises(UnparseableDocument):
        parse(GOOD[: len(GOOD) // 2], "manual.pdf")

    assert not [r for r in caplog.records if r.name.startswith("pypdf")]


def test_encrypted_pdf_needing_a_password_is_unparseable_and_says_encrypted() -> None:
    locked = make_pdf([["top secret"]], encrypt="secret")

    with pytest.raises(UnparseableDocument, match="encrypted") as raised:
        parse(locked, "locked.pdf")

    assert raised.value.code == "unparseable_document"
    assert raised.value.details["reason"] == "encrypted"


def test_pdf_encrypted_with_an_empty_user_password_is_read() -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(GOOD)))
    writer.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)

    assert parse(buffer.getvalue(), "restricted.pdf").blocks[1].text == "Second page text."


def test_pdf_without_a_text_layer_is_empty_and_says_so() -> None:
    with pytest.raises(EmptyDocument, match="no text layer"):
        parse(make_pdf([[], []]), "scan.pdf")


def test_empty_pdf_file_is_empty() -> None:
    with pytest.raises(EmptyDocument):
        parse(b"", "nothing.pdf")


def test_pages_without_text_are_skipped_and_numbering_kept() -> None:
    doc = parse(make_pdf([[], ["on page two"]]), "mixed.pdf")

    assert [(b.text, b.page) for b in doc.blocks] == [("on page two", 2)]
