"""Bytes to text: encodings, binary rejection, empty documents, newlines."""

from __future__ import annotations

import codecs
import random

import pytest

from shardrag.errors import BinaryContent, EmptyDocument
from shardrag.ingest import parse
from shardrag.ingest.decoding import decode_text


def test_utf8_is_decoded_and_recorded() -> None:
    decoded = decode_text("naïve café ✓".encode())

    assert decoded.text == "naïve café ✓"
    assert decoded.encoding == "utf-8"


def test_utf8_byte_order_mark_is_stripped() -> None:
    decoded = decode_text(codecs.BOM_UTF8 + b"hello")

    assert decoded.text == "hello"
    assert decoded.encoding == "utf-8"


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_with_byte_order_mark_are_decoded(encoding: str) -> None:
    bom = {
        "utf-16-le": codecs.BOM_UTF16_LE,
        "utf-16-be": codecs.BOM_UTF16_BE,
        "utf-32-le": codecs.BOM_UTF32_LE,
        "utf-32-be": codecs.BOM_UTF32_BE,
    }[encoding]

    decoded = decode_text(bom + "Grüße aus Köln\r\nzweite Zeile".encode(encoding))

    assert decoded.text == "Grüße aus Köln\nzweite Zeile"
    assert decoded.encoding == encoding


def test_utf16_document_parses_end_to_end_with_encoding_recorded() -> None:
    doc = parse("first paragraph\n\nsecond paragraph".encode("utf-16"), "notes.txt")

    assert [b.text for b in doc.blocks] == ["first paragraph", "second paragraph"]
    assert doc.encoding is not None and doc.encoding.startswith("utf-16")


def test_non_utf8_bytes_fall_back_to_cp1252_and_record_it() -> None:
    decoded = decode_text(b"caf\xe9 \x93quoted\x94 \x80 5")

    assert decoded.text == "café “quoted” € 5"
    assert decoded.encoding == "cp1252"


def test_bytes_undefined_in_cp1252_fall_back_to_latin1() -> None:
    # 0x81 has no cp1252 character, so only latin-1 reads these bytes.
    decoded = decode_text(b"caf\xe9 \x81")

    assert decoded.text == "café \x81"
    assert decoded.encoding == "latin-1"


def test_latin1_text_file_is_parsed_with_encoding_recorded() -> None:
    doc = parse(b"Le caf\xe9 est ferm\xe9.", "menu.txt")

    assert doc.blocks[0].text == "Le café est fermé."
    assert doc.encoding == "cp1252"


def test_nul_bytes_are_binary_content() -> None:
    with pytest.raises(BinaryContent, match="NUL"):
        decode_text(b"looks like text\x00but is not")


def test_random_binary_labelled_txt_is_binary_content() -> None:
    garbage = random.Random(7).randbytes(4096)

    with pytest.raises(BinaryContent):
        parse(garbage, "photo.txt")


def test_mostly_control_characters_are_binary_content() -> None:
    # No NUL byte: only the share of control characters gives it away.
    data = b"\x01\x02\x1b\x7fab" * 200

    with pytest.raises(BinaryContent, match="control characters") as raised:
        decode_text(data)
    assert raised.value.details["sampled"] == len(data)


def test_few_control_characters_and_text_whitespace_are_text() -> None:
    text = "col\tumn\fpage\x1b[0m " + "plain words " * 20

    assert decode_text(text.encode()).text == text


def test_nul_characters_in_utf16_text_are_binary_content() -> None:
    with pytest.raises(BinaryContent):
        decode_text(codecs.BOM_UTF16_LE + "a\x00b\x00c".encode("utf-16-le"))


def test_byte_order_mark_over_invalid_payload_is_binary_content() -> None:
    # A lone high surrogate is not UTF-16: the BOM was a coincidence in binary data.
    with pytest.raises(BinaryContent, match="utf-16-le"):
        decode_text(codecs.BOM_UTF16_LE + b"\x00\xd8a\x00")


@pytest.mark.parametrize(
    "data",
    [b"", b"   \n\t\r\n  ", codecs.BOM_UTF8, codecs.BOM_UTF16_LE + "  \n ".encode("utf-16-le")],
    ids=["no-bytes", "whitespace", "utf8-bom-only", "utf16-whitespace"],
)
def test_empty_and_whitespace_only_documents_are_empty(data: bytes) -> None:
    with pytest.raises(EmptyDocument):
        decode_text(data)


def test_newlines_are_normalised_to_line_feeds() -> None:
    assert decode_text(b"a\r\nb\rc\nd").text == "a\nb\nc\nd"
