"""Answers: search, assemble the passages within a budget, answer, cache — whole or streamed.

An answer is cached like a search result, under the tenant's generation read before it is
made (so no answer computed before a change of the tenant's documents is served after it),
the question as normalised, k, the budget, the filters, the caller's access groups and the
answerer's name. A streamed
answer reads and fills the same cache entry as a whole one: a stream read to its end is
cached; a cached answer streams as one piece.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from shardrag import validation
from shardrag.acl import Groups
from shardrag.cache import CacheKey, CacheKind, ResultCache
from shardrag.context.assembly import (
    Answer,
    Answerer,
    AnswerResult,
    AnswerStream,
    Context,
    ContextAssembler,
    citations_in,
)
from shardrag.context.generation import OpenAIChatGenerator
from shardrag.errors import InvalidParameter
from shardrag.models import Hit, Metadata, SearchMode
from shardrag.observability import tracing

#: Searches a tenant: (tenant, question, k, mode, filters, the caller's access groups) → hits.
Search = Callable[[str, str, int, SearchMode, Metadata | None, Groups], list[Hit]]


class Answering:
    """Answers questions of a tenant from its search results (see the module)."""

    def __init__(
        self,
        search: Search,
        generation: Callable[[str], tuple[str, int]],
        assembler: ContextAssembler,
        answerer: Answerer,
        cache: ResultCache | None,
        default_budget: int,
    ) -> None:
        self.search = search
        self.generation = generation
        self.assembler = assembler
        self.answerer = answerer
        self.cache = cache
        self.default_budget = default_budget

    def answer(
        self,
        tenant: str,
        question: str,
        k: int,
        max_context_tokens: int | None,
        filters: Metadata | None,
        groups: Groups = None,
        mode: SearchMode = SearchMode.HYBRID,
    ) -> AnswerResult:
        """The answer with its citations and the hits searched (searched in ``mode``)."""
        budget = self._budget(max_context_tokens)
        key = self._key(tenant, question, k, budget, filters, groups, mode)
        cached = self._cached(key)
        if cached is not None:
            return cached
        hits = self.search(tenant, question, k, mode, filters, groups)
        return self._answered(key, hits, self.assembler.run(question, hits, budget))

    def stream(
        self,
        tenant: str,
        question: str,
        k: int,
        max_context_tokens: int | None,
        filters: Metadata | None,
        groups: Groups = None,
        mode: SearchMode = SearchMode.HYBRID,
    ) -> AnswerStream:
        """The answer as it is written (see ``AnswerStream``)."""
        budget = self._budget(max_context_tokens)
        key = self._key(tenant, question, k, budget, filters, groups, mode)
        cached = self._cached(key)
        if cached is not None:
            context = self.assembler.run(question, cached.hits, budget)
            return AnswerStream(
                cached.hits, context, iter([cached.answer.text]), cached.answer.generated
            )
        hits = self.search(tenant, question, k, mode, filters, groups)
        context = self.assembler.run(question, hits, budget)
        if isinstance(self.answerer, OpenAIChatGenerator):
            # The generation outlives this call: its span ends with the last piece.
            span = tracing.Pending("generate", {"shardrag.answerer": self.answerer.name})
            pieces = self._cached_at_end(key, hits, context, self.answerer.stream(context), span)
            return AnswerStream(hits, context, pieces, generated=True)
        result = self._answered(key, hits, context)
        return AnswerStream(hits, context, iter([result.answer.text]), generated=False)

    def _cached(self, key: CacheKey) -> AnswerResult | None:
        cached = self.cache.get(key) if self.cache else None
        return cached if isinstance(cached, AnswerResult) else None

    def _answered(self, key: CacheKey, hits: list[Hit], context: Context) -> AnswerResult:
        """The answerer's answer to ``context``, cached under ``key``."""
        with tracing.span("generate", attributes={"shardrag.answerer": self.answerer.name}):
            result = AnswerResult(self.answerer.run(context), hits)
        if self.cache is not None:
            self.cache.put(key, result)
        return result

    def _cached_at_end(
        self,
        key: CacheKey,
        hits: list[Hit],
        context: Context,
        pieces: Iterator[str],
        span: tracing.Pending,
    ) -> Iterator[str]:
        """``pieces``, and once they are all read, the answer they make in the cache."""
        text: list[str] = []
        try:
            for piece in pieces:
                text.append(piece)
                yield piece
        except GeneratorExit:  # the reader stopped (a client went away): not a failure
            span.end()
            raise
        except BaseException as exc:
            span.end(exc)
            raise
        span.end()
        if self.cache is not None:
            answer = "".join(text).strip()
            cited = citations_in(answer, context)
            self.cache.put(key, AnswerResult(Answer(answer, cited, True), hits))

    def _key(
        self,
        tenant: str,
        question: str,
        k: int,
        budget: int,
        filters: Metadata | None,
        groups: Groups,
        mode: SearchMode,
    ) -> CacheKey:
        incarnation, generation = self.generation(tenant)
        return CacheKey.for_search(
            tenant,
            generation,
            CacheKind.ANSWER,
            validation.query_text(question),
            {
                "k": k,
                "budget": budget,
                "filters": filters or {},
                "groups": None if groups is None else list(groups),
                "answerer": self.answerer.name,
                "mode": mode.value,
                "incarnation": incarnation,
            },
        )

    def _budget(self, max_context_tokens: int | None) -> int:
        budget = max_context_tokens or self.default_budget
        if budget < 1:
            raise InvalidParameter("max_context_tokens must be at least 1")
        return budget
