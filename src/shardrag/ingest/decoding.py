"""Bytes to text for the text formats: encoding detection, binary rejection, newlines."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from shardrag.errors import BinaryContent, EmptyDocument

# Longest BOM first: the UTF-32-LE BOM begins with the UTF-16-LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Tried in order for text without a BOM; latin-1, which maps every byte, is the last resort.
_UNMARKED_ENCODINGS = ("utf-8", "cp1252")

SNIFF_CHARS = 8192
MAX_CONTROL_RATIO = 0.10
_TEXT_CONTROLS = frozenset("\t\n\r\f")


@dataclass(frozen=True)
class DecodedText:
    """A document's text with ``\\n`` newlines, and the encoding it was decoded from."""

    text: str
    encoding: str


def decode_text(data: bytes) -> DecodedText:
    """Decode the bytes of a text document, rejecting binary and empty content.

    UTF-8/16/32 with a BOM are decoded as marked; other bytes as UTF-8, else cp1252, else
    latin-1. Binary content (NUL bytes, or more than 10% control characters in the first
    8 KiB) raises ``BinaryContent``; no bytes or only whitespace raises ``EmptyDocument``.
    """
    if not data:
        raise EmptyDocument("the document is empty (0 bytes)")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            text = _decode_marked(data[len(bom) :], encoding)
            break
    else:
        if b"\x00" in data:
            raise BinaryContent("the document contains NUL bytes: it is binary, not text")
        # latin-1 maps bytes one to one, so the byte sample can be checked as characters.
        _reject_control_characters(data[:SNIFF_CHARS].decode("latin-1"))
        text, encoding = _decode_unmarked(data)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise EmptyDocument("the document contains only whitespace")
    return DecodedText(text=text, encoding=encoding)


def _decode_marked(payload: bytes, encoding: str) -> str:
    try:
        text = payload.decode(encoding)
    except UnicodeDecodeError as exc:
        raise BinaryContent(
            f"the document starts with a {encoding} byte order mark but is not {encoding}",
            encoding=encoding,
        ) from exc
    if "\x00" in text:
        raise BinaryContent("the document contains NUL characters: it is binary, not text")
    _reject_control_characters(text[:SNIFF_CHARS])
    return text


def _decode_unmarked(data: bytes) -> tuple[str, str]:
    for encoding in _UNMARKED_ENCODINGS:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1"), "latin-1"


def _reject_control_characters(sample: str) -> None:
    controls = sum(1 for ch in sample if (ch < " " or ch == "\x7f") and ch not in _TEXT_CONTROLS)
    if controls > MAX_CONTROL_RATIO * len(sample):
        raise BinaryContent(
            f"{controls} of the first {len(sample)} characters are control characters: "
            "the document is binary, not text",
            control_characters=controls,
            sampled=len(sample),
        )
