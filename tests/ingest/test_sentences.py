"""Sentence cutting: the points where long blocks may be split and overlap begins."""

from __future__ import annotations

from shardrag.ingest.sentences import split_sentences


def sentences(text: str) -> list[str]:
    return [sentence for sentence, _ in split_sentences(text)]


def test_sentences_end_at_terminal_punctuation_before_a_capital_or_digit() -> None:
    assert sentences('One. Two! Three? "Four." (Five.) 6 is a number.') == [
        "One.",
        "Two!",
        "Three?",
        '"Four."',
        "(Five.)",
        "6 is a number.",
    ]


def test_lowercase_continuations_decimals_and_abbreviations_do_not_end_sentences() -> None:
    text = (
        "See Fig. 3 and Dr. Smith, e.g. Here, vs. There. "
        "Pi is 3.14 approx. ok. J. R. R. Tolkien wrote."
    )

    assert sentences(text) == [
        "See Fig. 3 and Dr. Smith, e.g. Here, vs. There.",
        "Pi is 3.14 approx. ok.",
        "J. R. R. Tolkien wrote.",
    ]


def test_line_breaks_end_pieces_and_keep_indentation() -> None:
    pairs = split_sentences("def f():\n    return 1\n\n\nprint(f())")

    assert pairs == [("def f():", "\n"), ("    return 1", "\n\n\n"), ("print(f())", "")]


def test_cjk_full_stops_end_sentences_without_spaces() -> None:
    assert split_sentences("第一句。第二句！第三") == [
        ("第一句。", ""),
        ("第二句！", ""),
        ("第三", ""),
    ]


def test_separators_rebuild_the_text() -> None:
    text = "Alpha beta. Gamma delta!  Epsilon\nzeta. Eta"

    rebuilt = "".join(sentence + separator for sentence, separator in split_sentences(text))

    assert rebuilt == "Alpha beta. Gamma delta! Epsilon\nzeta. Eta"


def test_text_without_boundaries_is_one_sentence() -> None:
    assert sentences("x" * 5000) == ["x" * 5000]
