"""Cutting a block of text into sentences, the units chunk boundaries and overlap fall on."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (plus closing quotes or brackets) before spaces, at CJK full stops,
# or at a line end (code and preformatted text are cut between lines).
_BOUNDARY = re.compile(r"[.!?]+[\"')\]’”»]*[ \t]+|[。！？]+[ \t]*|(?:[ \t]*\n)+")
_OPENERS = "\"'([“‘«"
# How far back to look for the word before a full stop; abbreviations are far shorter.
_LONGEST_WORD = 32
_INITIALISM = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]")
# Words after which a full stop rarely ends the sentence ("Dr. Smith", "Fig. 3").
_ABBREVIATIONS = frozenset(
    {
        "al", "approx", "cf", "co", "corp", "dept", "dr", "eq", "fig", "figs", "inc", "jr",
        "ltd", "mr", "mrs", "ms", "mt", "no", "nos", "p", "pp", "prof", "sr", "st", "vol",
        "vols", "vs",
    }
)  # fmt: skip


def split_sentences(text: str) -> list[tuple[str, str]]:
    """``text`` as ``(sentence, separator)`` pairs, in order, blank sentences left out.

    A sentence keeps no trailing whitespace; ``separator`` is the whitespace that followed it,
    reduced to one space, the line breaks, or nothing. Leading indentation is kept, so code
    survives being cut and rejoined. A full stop after an abbreviation or an initial ("e.g.",
    "J. Smith") or before a lowercase word does not end a sentence.
    """
    pairs: list[tuple[str, str]] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        if not _ends_sentence(text, match):
            continue
        sentence = text[start : match.end()].rstrip()
        if sentence.strip():
            pairs.append((sentence, _separator(match.group())))
        start = match.end()
    tail = text[start:].rstrip()
    if tail.strip():
        pairs.append((tail, ""))
    return pairs


def _ends_sentence(text: str, match: re.Match[str]) -> bool:
    mark = match.group()
    if "\n" in mark or mark[0] in "。！？":
        return True
    # Index arithmetic, not slices of the rest of the text: slicing per match is quadratic.
    after = match.end()
    while after < len(text) and text[after] in _OPENERS:
        after += 1
    following = text[after : after + 1]
    if not (following.isupper() or following.isdigit()):
        return False
    if mark[0] != "." or mark.startswith(".."):
        return True
    words = text[max(0, match.start() - _LONGEST_WORD) : match.start()].rsplit(maxsplit=1)
    word = words[-1].lstrip(_OPENERS) if words else ""
    return not (word.lower() in _ABBREVIATIONS or _INITIALISM.fullmatch(word))


def _separator(mark: str) -> str:
    newlines = mark.count("\n")
    if newlines:
        return "\n" * newlines
    return " " if mark[-1] in " \t" else ""
