"""PDF: the text layer of each page, as blocks that know their page number."""

from __future__ import annotations

import io
import logging

from pypdf import PasswordType, PdfReader

from shardrag.errors import EmptyDocument, ShardragError, UnparseableDocument
from shardrag.ingest.structure import BlockBuilder, paragraphs
from shardrag.models import ParsedDocument

CONTENT_TYPE = "application/pdf"

# pypdf logs a warning for every recoverable defect it meets; broken input surfaces as an
# error to the caller instead, so the warnings are noise.
logging.getLogger("pypdf").setLevel(logging.ERROR)

# Titles PDF producers write when the author set none; as a context they would only add noise.
PLACEHOLDER_TITLES = frozenset({"untitled", "untitled document"})


def parse_pdf(data: bytes) -> ParsedDocument:
    """Blocks of each page's text, cut at blank lines, with their 1-based ``page``.

    The title comes from the metadata unless it is a placeholder such as "untitled". A PDF
    pypdf cannot read, or that needs a password, raises ``UnparseableDocument``; one without
    a text layer (a scan) raises ``EmptyDocument``.
    """
    if not data:
        raise EmptyDocument("the document is empty (0 bytes)")
    try:
        return _extract(PdfReader(io.BytesIO(data)))
    except ShardragError:
        raise
    # pypdf fails on damaged files with anything from PdfReadError to KeyError or zlib.error.
    except Exception as exc:
        raise UnparseableDocument(
            f"the PDF cannot be read: {type(exc).__name__}: {exc}", reason=str(exc)
        ) from exc


def _extract(reader: PdfReader) -> ParsedDocument:
    if reader.is_encrypted and _decrypt_without_password(reader) is PasswordType.NOT_DECRYPTED:
        raise UnparseableDocument(
            "the PDF is encrypted and cannot be opened without a password", reason="encrypted"
        )
    builder = BlockBuilder()
    for number, page in enumerate(reader.pages, start=1):
        for paragraph in paragraphs(page.extract_text()):
            builder.add(paragraph, page=number)
    metadata = reader.metadata
    title = metadata.title if metadata is not None else None
    return builder.document(
        content_type=CONTENT_TYPE,
        title=None if title is None or title.strip().lower() in PLACEHOLDER_TITLES else title,
        empty_message="the PDF has no text layer (a scanned document?); nothing to index",
    )


def _decrypt_without_password(reader: PdfReader) -> PasswordType:
    # Many PDFs are encrypted only to restrict printing or copying: the empty user password
    # opens them. AES needs an optional crypto package; without it the file stays closed.
    try:
        return reader.decrypt("")
    except Exception as exc:
        raise UnparseableDocument(
            f"the PDF is encrypted and cannot be opened: {exc}", reason="encrypted"
        ) from exc
