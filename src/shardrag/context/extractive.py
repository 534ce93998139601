"""Answering without a language model: the passages' sentences that best match the question."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from shardrag.context.assembly import NO_ANSWER, Answer, Citation, Context
from shardrag.errors import InvalidParameter
from shardrag.ingest.sentences import split_sentences
from shardrag.ingest.structure import collapse_whitespace

_WORD = re.compile(r"\w+")
# Words that say how a question is asked, not what it is about.
_STOP_WORDS = frozenset(
    {
        "a", "about", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been", "being",
        "but", "by", "can", "could", "did", "do", "does", "doing", "done", "each", "for", "from",
        "get", "gets", "had", "has", "have", "having", "how", "i", "if", "in", "into", "is", "it",
        "its", "just", "many", "may", "me", "might", "more", "most", "much", "must", "my", "no",
        "nor", "not", "of", "off", "on", "once", "only", "or", "other", "our", "out", "over",
        "own", "s", "same", "shall", "should", "so", "some", "such", "t", "than", "that", "the",
        "their", "them", "then", "there", "these", "they", "this", "those", "to", "too", "us",
        "very", "was", "we", "were", "what", "when", "where", "which", "who", "whom", "whose",
        "why", "will", "with", "would", "you", "your",
    }
)  # fmt: skip
# Tried in order, the first that leaves a stem of _MIN_STEM letters wins.
_SUFFIXES = (
    "ations", "ation", "ators", "ator", "ates", "ated", "ate", "ings", "ing", "edly", "ed",
    "ies", "es", "ly", "s",
)  # fmt: skip
_MIN_STEM = 3
_MIN_PREFIX = 4
# A sentence scoring under this share of the best one matches a side topic of the question:
# it would add words to the answer, not support.
_SHARE_OF_BEST = 0.5


@dataclass(frozen=True)
class _Sentence:
    citation: Citation
    position: int  # within its passage
    text: str
    covers: frozenset[str]  # the question's terms it contains


class ExtractiveAnswerer:
    """Answers with the passages' sentences that best cover the question's content words.

    A sentence's score is the share of the question's weight it covers, from 0 to 1. Each
    content word of the question (stop words dropped, crudely stemmed, matching the words it
    starts too) weighs its inverse frequency among the passages' sentences: a rare word counts
    more than one every sentence has, and a word no passage has lowers every score.

    The best ``max_sentences`` sentences scoring at least ``min_score`` and at least half the
    best score are the answer, in source order, each followed by its citation marker; when
    none does, the answer is ``NO_ANSWER``, citing nothing.
    """

    #: Names the answerer in cache keys: answers of one never stand in for another's.
    name = "extractive"

    def __init__(self, max_sentences: int = 3, min_score: float = 0.25) -> None:
        if max_sentences < 1:
            raise InvalidParameter(
                f"max_sentences must be at least 1, not {max_sentences}",
                max_sentences=max_sentences,
            )
        if not 0 < min_score <= 1:
            raise InvalidParameter(
                f"min_score must be above 0 and at most 1, not {min_score}", min_score=min_score
            )
        self.max_sentences = max_sentences
        self.min_score = min_score

    def run(self, context: Context) -> Answer:
        """The best-supported sentences of ``context.passages``, each with its citation."""
        question = _terms(context.question)
        sentences = [
            _Sentence(passage, position, text, _covered(question, _terms(text)))
            for passage in context.passages
            for position, text in enumerate(
                collapse_whitespace(sentence) for sentence, _ in split_sentences(passage.text)
            )
        ]
        weights = {
            term: math.log(1 + len(sentences) / (1 + sum(term in s.covers for s in sentences)))
            for term in question
        }
        total = sum(weights.values())
        if not total:  # no content words in the question, or no sentences to answer from
            return Answer(NO_ANSWER, citations=[], generated=False)
        scored = sorted(
            ((sum(weights[term] for term in s.covers) / total, s) for s in sentences),
            key=lambda pair: (-pair[0], pair[1].citation.number, pair[1].position),
        )
        floor = max(self.min_score, scored[0][0] * _SHARE_OF_BEST)
        chosen: list[_Sentence] = []
        for score, sentence in scored:
            if score < floor or len(chosen) == self.max_sentences:
                break
            # Passages of two versions of a document can hold the same sentence: say it once.
            if all(sentence.text != taken.text for taken in chosen):
                chosen.append(sentence)
        if not chosen:
            return Answer(NO_ANSWER, citations=[], generated=False)
        chosen.sort(key=lambda s: (s.citation.number, s.position))
        cited = {s.citation.number: s.citation for s in chosen}
        return Answer(
            " ".join(f"{s.text} {s.citation.marker}" for s in chosen),
            citations=[cited[number] for number in sorted(cited)],
            generated=False,
        )


def _covered(question: frozenset[str], terms: frozenset[str]) -> frozenset[str]:
    """The question's terms a sentence's ``terms`` match, as themselves or as a word's start.

    Matching starts of words finds the parts of compounds the stemmer cannot reach: "fail" in
    "failover", "shard" in "shardmap". Short stems would match too many words to say anything.
    """
    return frozenset(
        term
        for term in question
        if term in terms
        or (len(term) >= _MIN_PREFIX and any(word.startswith(term) for word in terms))
    )


def _terms(text: str) -> frozenset[str]:
    """The stems of the content words of ``text``."""
    return frozenset(_stem(word) for word in _WORD.findall(text.lower()) if word not in _STOP_WORDS)


def _stem(word: str) -> str:
    """A crude stem: "replicas", "replicated" and "replication" all become "replic"."""
    if not word.endswith("ss"):
        for suffix in _SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= _MIN_STEM:
                word = word[: -len(suffix)]
                break
    # A final vowel differs between forms of a word: "node"/"nodes", "copy"/"copies",
    # "replica"/"replication".
    return word[:-1] if len(word) > _MIN_STEM and word[-1] in "aey" else word
