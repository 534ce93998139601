"""Prompt assembly: ranked hits to numbered, deduplicated passages within a token budget."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any, Protocol

from shardrag.embed.tokenizer import ModelTokenizer
from shardrag.errors import EmptyQuery, InvalidParameter
from shardrag.models import Hit

#: The answer when the sources do not hold one, given by every answerer in the same words.
NO_ANSWER = "The documents do not contain an answer to this question."
# Joins passages of one document that share no text (no overlap to say how they connect).
PASSAGE_SEPARATOR = "\n\n"
_WORD = re.compile(r"\S+")
# "[2]" and the "[1, 3]" some models write for several sources at once.
_MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_SYSTEM_PROMPT = (
    "You answer questions about a collection of documents. Use only the numbered sources in "
    "the user's message, never outside knowledge. Cite the sources each statement comes from "
    "as [n] right after it, for example [1] or [2][3]. If the sources do not contain the "
    f"answer, reply exactly: {NO_ANSWER}"
)

_DocKey = tuple[str, int]  # (doc_id, version): chunks merge only within one version


@dataclass(frozen=True)
class Citation:
    """One numbered source of a context: consecutive chunks of one document version, merged."""

    number: int
    doc_id: str
    version: int
    chunk_indexes: tuple[int, ...]
    filename: str | None
    page: int | None
    text: str

    @property
    def marker(self) -> str:
        """How an answer cites this source: ``[n]``."""
        return f"[{self.number}]"


@dataclass(frozen=True)
class Context:
    """The question and its numbered sources (``passages``, numbered 1..n in source order).

    ``prompt_tokens`` counts the tokens of the passages' text, the part the budget limits;
    ``dropped_hits`` is how many hits were left out because they did not fit.
    """

    question: str
    passages: list[Citation]
    prompt_tokens: int
    dropped_hits: int


@dataclass(frozen=True)
class Answer:
    """An answer to a context's question; ``citations`` are the sources its text cites."""

    text: str
    citations: list[Citation]
    generated: bool


@dataclass(frozen=True)
class AnswerResult:
    """What a caller of ``answer`` gets: the answer, the sources it cites, the hits searched."""

    answer: Answer
    hits: list[Hit]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (CLI --json, API): answer text, citations, hits."""
        return {
            "answer": self.answer.text,
            "generated": self.answer.generated,
            "citations": [asdict(c) for c in self.answer.citations],
            "hits": [h.to_dict() for h in self.hits],
        }


@dataclass
class AnswerStream:
    """An answer as it is written: the hits searched and the context built from them at once,
    the text in ``pieces`` as the answerer produces it.

    ``generated``: a language model writes it (else it is extractive). The citations of the
    joined text are ``citations_in(text, context)``.
    """

    hits: list[Hit]
    context: Context
    pieces: Iterator[str]
    generated: bool


class Answerer(Protocol):
    """What answers a context: a language model, or extraction from the passages."""

    #: Which answerer this is, for cache keys (one answerer's answers never serve another's).
    name: str

    def run(self, context: Context) -> Answer:
        """The answer to ``context.question`` from ``context.passages``."""
        ...


class ContextAssembler:
    """Turns ranked hits into the sources of a prompt, within a budget of model tokens.

    Hits are taken in the order given (best first), each only if what it adds still fits
    ``max_context_tokens``; one that does not fit is skipped and the next, maybe smaller, one
    is tried. Kept chunks of one document version with adjacent indexes become one passage,
    the text the chunker repeated at the start of the later chunk (its overlap) kept once, and
    the budget is charged for the merged text. Passages are then put in source order:
    documents in the order of their best kept hit, each document's passages by chunk index.
    """

    def __init__(self, tokenizer: ModelTokenizer) -> None:
        self.tokenizer = tokenizer

    def run(self, question: str, hits: list[Hit], max_context_tokens: int) -> Context:
        """The context for ``question`` from ``hits``, numbered citations 1..n."""
        if not question.strip():
            raise EmptyQuery("the question is empty")
        if max_context_tokens < 1:
            raise InvalidParameter(
                f"max_context_tokens must be at least 1, not {max_context_tokens}",
                max_context_tokens=max_context_tokens,
            )
        # Insertion order of documents is the order of their best kept hit.
        kept: dict[_DocKey, dict[int, Hit]] = {}
        counts: dict[str, int] = {}
        used = 0
        dropped = 0
        for hit in hits:
            chunks = kept.get((hit.doc_id, hit.version), {})
            if hit.chunk_index in chunks:
                continue  # the same chunk twice (from two shards, say) is one source
            before, after = _neighbours(chunks, hit.chunk_index)
            # Adding a chunk joins it to its kept neighbours: the cost is the merged passage
            # less the passages it replaces, all counted as the prompt will hold them.
            cost = self._count(_merge([*before, hit, *after]), counts) - sum(
                self._count(_merge(side), counts) for side in (before, after) if side
            )
            if used + cost > max_context_tokens:
                dropped += 1
                continue
            kept.setdefault((hit.doc_id, hit.version), {})[hit.chunk_index] = hit
            used += cost
        passages = [
            _citation(number, span)
            for number, span in enumerate(
                (span for chunks in kept.values() for span in _runs(chunks)), start=1
            )
        ]
        return Context(question, passages, prompt_tokens=used, dropped_hits=dropped)

    def _count(self, text: str, counts: dict[str, int]) -> int:
        """Tokens of ``text``, remembered for the rest of one ``run``."""
        if text not in counts:
            counts[text] = self.tokenizer.count(text)
        return counts[text]


def render_prompt(context: Context) -> list[dict[str, str]]:
    """The context as OpenAI chat messages: instructions, then the sources and the question."""
    sources = (
        PASSAGE_SEPARATOR.join(
            f"{passage.marker} ({_label(passage)}) {passage.text}" for passage in context.passages
        )
        or "(no sources were found)"
    )
    return [
        {"role": "system", "content": _SYSTEM_PROMPT},
        {"role": "user", "content": f"Sources:\n\n{sources}\n\nQuestion: {context.question}"},
    ]


def citations_in(text: str, context: Context) -> list[Citation]:
    """The passages of ``context`` that ``text`` cites with ``[n]`` markers, by number.

    Markers naming no passage (a model inventing ``[9]`` of 3 sources) are ignored.
    """
    numbers = {
        int(number) for group in _MARKER.findall(text) for number in group.split(",") if number
    }
    return [passage for passage in context.passages if passage.number in numbers]


def _label(passage: Citation) -> str:
    return passage.doc_id if passage.page is None else f"{passage.doc_id}, p. {passage.page}"


def _neighbours(chunks: dict[int, Hit], index: int) -> tuple[list[Hit], list[Hit]]:
    """The kept chunks adjacent to ``index`` on each side, in index order."""
    start = index
    while start - 1 in chunks:
        start -= 1
    end = index
    while end + 1 in chunks:
        end += 1
    return [chunks[i] for i in range(start, index)], [chunks[i] for i in range(index + 1, end + 1)]


def _runs(chunks: dict[int, Hit]) -> list[list[Hit]]:
    """The kept chunks of one document version as runs of consecutive indexes, in order."""
    runs: list[list[Hit]] = []
    for index in sorted(chunks):
        if runs and runs[-1][-1].chunk_index == index - 1:
            runs[-1].append(chunks[index])
        else:
            runs.append([chunks[index]])
    return runs


def _citation(number: int, run: list[Hit]) -> Citation:
    first = run[0]
    return Citation(
        number=number,
        doc_id=first.doc_id,
        version=first.version,
        chunk_indexes=tuple(hit.chunk_index for hit in run),
        filename=first.filename,
        page=first.page,
        text=_merge(run),
    )


def _merge(run: list[Hit]) -> str:
    """The text of consecutive chunks with each overlap kept once."""
    text = run[0].text
    for hit in run[1:]:
        text = _join_overlapping(text, hit.text)
    return text


def _join_overlapping(first: str, second: str) -> str:
    """``first`` then ``second`` without the words ``second`` repeats from the end of ``first``.

    The chunker starts a chunk with the previous chunk's last sentences; the longest run of
    words ending ``first`` and starting ``second`` is that overlap. Words are compared with
    whitespace normalised, and the rest of ``second`` keeps the whitespace that followed the
    overlap in the source (a space, or the break between paragraphs).
    """
    first_words, second_words = first.split(), second.split()
    for size in range(min(len(first_words), len(second_words)), 0, -1):
        if first_words[-size:] == second_words[:size]:
            last = next(islice(_WORD.finditer(second), size - 1, None))
            return first + second[last.end() :].rstrip()
    return PASSAGE_SEPARATOR.join(text for text in (first, second) if text.strip())
