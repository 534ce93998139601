"""Answering without a language model: the passages' sentences that best match the question."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import numpy as np

from shardrag.context.assembly import NO_ANSWER, Answer, Citation, Context
from shardrag.embed.base import Embedder
from shardrag.errors import InvalidParameter, Unavailable
from shardrag.ingest.sentences import split_sentences
from shardrag.ingest.structure import collapse_whitespace

log = logging.getLogger(__name__)
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
# it would add words to the answer, not support. With the semantic view every sentence on
# the passages' topic scores something, so the bar is closer to the best.
_SHARE_OF_BEST = 0.75
_SHARE_OF_BEST_LEXICAL = 0.5
# Fewer words make a heading or a fragment ("Restore a snapshot."), not a statement.
_MIN_WORDS = 4
# The sentences weighed per answer, in passage order (the best passages come first).
_MOST_SENTENCES = 96
# The sentences the semantic view embeds: the best by the lexical view, ties in passage order
# (so with no word in common it reads the best passages first). Bounds an answer's model work:
# ~4 ms a sentence of ~30 words on two cores (onnx-int8), so ~65 ms an answer.
_SEMANTIC_CANDIDATES = 16
# A sentence that speaks of the text itself ("This page explains how ...") restates what the
# text is about; it does not answer. Its support counts this much.
_ABOUT_THE_TEXT_DISCOUNT = 0.5
_ABOUT_THE_TEXT = re.compile(
    r"^(?:in\s+)?(?:this|the\s+following|below,?\s+(?:this|the))\s+"
    r"(?:page|document|doc|guide|section|article|chapter|post|tutorial|manual|handbook|"
    r"runbook|note|readme|file)s?\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Sentence:
    citation: Citation
    position: int  # within its passage
    text: str


class ExtractiveAnswerer:
    """Answers with the passages' sentences that best support the question.

    A sentence's support, from 0 to 1, is the mean of two views of it:

    - **lexical**: the share of the question's weight it covers. Each content word of the
      question (stop words dropped, crudely stemmed, matching the words it starts too) weighs
      its inverse frequency among the passages' sentences: a rare word counts more than one
      every sentence has, and a word no passage has lowers every score;
    - **semantic** (with an ``embedder``): the cosine of the sentence and the question under
      the embedding model, which sees a paraphrase the words miss and tells a sentence about
      the question's topic from one that only shares a word with it. Computed for the
      ``_SEMANTIC_CANDIDATES`` best sentences by the lexical view (ties in passage order),
      which bounds the model's work per answer.

    A sentence about the text itself ("This guide explains how ...") restates the topic and
    answers nothing: its support is discounted. The answer is the best ``max_sentences``
    sentences of at least ``_MIN_WORDS`` words (headings and fragments state nothing) whose
    support is at least ``min_score`` and close to the best one's (``_SHARE_OF_BEST``), in
    source order, each followed by its citation marker. When none qualifies, or (with an
    embedder) no sentence is closer to the question than ``min_similarity`` (the passages are
    about something else), the answer is ``NO_ANSWER``, citing nothing. Without an embedder,
    or while it fails, the support is the lexical view alone. Measured on a public QA set in
    ``bench/answer_quality.py`` (docs/benchmarks.md, "Extractive answers").
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        max_sentences: int = 3,
        min_score: float = 0.25,
        min_similarity: float = 0.25,
    ) -> None:
        if max_sentences < 1:
            raise InvalidParameter(
                f"max_sentences must be at least 1, not {max_sentences}",
                max_sentences=max_sentences,
            )
        for label, value in (("min_score", min_score), ("min_similarity", min_similarity)):
            if not 0 < value <= 1:
                raise InvalidParameter(
                    f"{label} must be above 0 and at most 1, not {value}", **{label: value}
                )
        self.embedder = embedder
        #: Names the answerer in cache keys: answers of one never stand in for another's.
        self.name = "extractive" if embedder is None else f"extractive+{embedder.model_id}"
        self.max_sentences = max_sentences
        self.min_score = min_score
        self.min_similarity = min_similarity

    def run(self, context: Context) -> Answer:
        """The best-supported sentences of ``context.passages``, each with its citation."""
        sentences = self._sentences(context)
        if not sentences:
            return Answer(NO_ANSWER, citations=[], generated=False)
        support = self._lexical(context.question, sentences)
        share = _SHARE_OF_BEST_LEXICAL
        similarity = self._semantic(context.question, sentences, support)
        if similarity is not None:
            if max(similarity) < self.min_similarity:
                return Answer(NO_ANSWER, citations=[], generated=False)
            support = [(a + b) / 2 for a, b in zip(support, similarity, strict=True)]
            share = _SHARE_OF_BEST
        support = [
            score * _ABOUT_THE_TEXT_DISCOUNT if _ABOUT_THE_TEXT.match(s.text) else score
            for score, s in zip(support, sentences, strict=True)
        ]
        ranked = sorted(
            zip(support, sentences, strict=True),
            key=lambda pair: (-pair[0], pair[1].citation.number, pair[1].position),
        )
        floor = max(self.min_score, ranked[0][0] * share)
        chosen: list[_Sentence] = []
        for score, sentence in ranked:
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

    def _sentences(self, context: Context) -> list[_Sentence]:
        """The passages' sentences that could answer: long enough, at most ``_MOST_SENTENCES``."""
        sentences = [
            _Sentence(passage, position, text)
            for passage in context.passages
            for position, text in enumerate(
                collapse_whitespace(sentence) for sentence, _ in split_sentences(passage.text)
            )
            if len(_WORD.findall(text)) >= _MIN_WORDS
        ]
        return sentences[:_MOST_SENTENCES]

    def _lexical(self, question: str, sentences: list[_Sentence]) -> list[float]:
        """Each sentence's share of the question's content-word weight."""
        terms = _terms(question)
        covers = [_covered(terms, _terms(s.text)) for s in sentences]
        weights = {
            term: math.log(1 + len(sentences) / (1 + sum(term in c for c in covers)))
            for term in terms
        }
        total = sum(weights.values())
        if not total:  # no content words in the question
            return [0.0] * len(sentences)
        return [sum(weights[term] for term in c) / total for c in covers]

    def _semantic(
        self, question: str, sentences: list[_Sentence], lexical: list[float]
    ) -> list[float] | None:
        """Each sentence's cosine with the question (the embedder's vectors are unit length);
        0 for a sentence past the ``_SEMANTIC_CANDIDATES`` best by ``lexical``. None without
        an embedder, or when it fails (an embedding endpoint that is down): the answer is then
        the lexical view's, not an error."""
        if self.embedder is None:
            return None
        candidates = sorted(range(len(sentences)), key=lambda i: -lexical[i])
        candidates = candidates[:_SEMANTIC_CANDIDATES]
        try:
            query = np.asarray(self.embedder.embed_query(question), dtype=np.float32)
            vectors = np.asarray(
                self.embedder.embed_documents([sentences[i].text for i in candidates]),
                dtype=np.float32,
            )
        except Unavailable as exc:
            log.warning("extractive answer without the semantic view: %s", exc)
            return None
        similarity = [0.0] * len(sentences)
        for i, cosine in zip(candidates, vectors @ query, strict=True):
            similarity[i] = max(0.0, float(cosine))
        return similarity


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
