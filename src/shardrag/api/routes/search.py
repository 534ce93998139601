"""Search and answers (readers and up)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from shardrag.api.costs import ModelBudget, embedding_cost
from shardrag.api.deps import Caller, tenant_caller
from shardrag.api.limits import shed_if_late
from shardrag.api.schemas import (
    AnswerBody,
    AnswerOut,
    EmbedBody,
    EmbedOut,
    SearchBody,
    SearchOut,
)
from shardrag.context import citations_in
from shardrag.errors import InternalError, ShardragError
from shardrag.registry import Role

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/tenants/{t}", tags=["search"])

Reader = Annotated[Caller, Depends(tenant_caller(Role.READER))]

_SSE_DOC = (
    "With `stream: true` the answer is `text/event-stream`: one `context` event (hits and "
    "numbered passages), `delta` events with pieces of the answer, then `done` (the answer "
    "and the citations it uses) or `error` (the error object)."
)


@router.post("/search", response_model=SearchOut)
def search(t: str, body: SearchBody, who: Reader, request: Request) -> Any:
    """The top-k passages of the tenant's live documents.

    ``read_concern``: ``eventual`` (default), ``session`` with a ``write_token`` (sees that
    write), or ``strong`` (sees every write accepted before the search).
    """
    shed_if_late(request)
    hits = who.service.rag.search(
        t,
        body.query,
        k=body.k,
        mode=body.mode,
        filters=body.filters,
        fusion=body.fusion,
        read_concern=body.read_concern,
        write_token=body.write_token,
        groups=who.groups,
    )
    return {"hits": [h.to_dict() for h in hits]}


@router.post(
    "/answer",
    response_model=AnswerOut,
    description=_SSE_DOC,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def answer(t: str, body: AnswerBody, who: Reader, request: Request) -> Any:
    """Answer a question from the tenant's documents, with numbered citations."""
    shed_if_late(request)
    rag = who.service.rag
    asked = (t, body.question, body.k, body.max_context_tokens, body.filters, who.groups, body.mode)
    # Its context is what the model reads: the tokens it holds of the tenant's budget (a
    # stream holds them while its passages are found and assembled).
    cost = (body.max_context_tokens or rag.settings.answer_context_tokens) + embedding_cost(
        [body.question]
    )
    async with _budget(request).hold(t, cost):
        if not body.stream:
            result = await run_in_threadpool(rag.answer, *asked)
            return result.to_dict()
        stream = await run_in_threadpool(rag.answer_stream, *asked)
    context = stream.context

    def events() -> Iterator[str]:
        yield _event(
            "context",
            {
                "hits": [h.to_dict() for h in stream.hits],
                "passages": [asdict(p) for p in context.passages],
                "generated": stream.generated,
            },
        )
        text = []
        try:
            for piece in stream.pieces:
                text.append(piece)
                yield _event("delta", {"text": piece})
        except ShardragError as exc:
            yield _event("error", {"error": exc.to_dict()})
            return
        except Exception as exc:  # the stream has begun: report in-band, never a torn 200
            log.exception("answer stream failed", extra={"trace_id": who.trace_id})
            error = InternalError(f"{type(exc).__name__}", trace_id=who.trace_id)
            yield _event("error", {"error": error.to_dict()})
            return
        answer_text = "".join(text).strip()
        cited = citations_in(answer_text, context)
        done = {"answer": answer_text, "citations": [asdict(c) for c in cited]}
        yield _event("done", {**done, "generated": stream.generated})

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


@router.post("/embeddings", response_model=EmbedOut)
async def embed(t: str, body: EmbedBody, who: Reader, request: Request) -> Any:
    """Vectors of texts by the service's own embedding model (what its search uses): for
    clients that need the same vector space, such as LangChain's ``Embeddings``.

    Admitted by cost: the call holds its texts' tokens of the tenant's model budget while it
    runs, and waits behind the tenant's own earlier calls (429 ``tenant_overloaded`` when it
    cannot get them in time).
    """
    rag = who.service.rag
    async with _budget(request).hold(t, embedding_cost(body.texts)):
        vectors = await run_in_threadpool(rag.embed, t, body.texts, body.kind == "query")
    return {"model": rag.embedder.model_id, "dimension": len(vectors[0]), "vectors": vectors}


def _budget(request: Request) -> ModelBudget:
    budget: ModelBudget = request.app.state.model_budget
    return budget


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"
