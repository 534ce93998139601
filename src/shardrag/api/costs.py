"""Admission of model work by its cost: a tenant's embeddings and answers hold tokens.

One ``/embeddings`` call of 256 long texts costs the model as much as hundreds of searches.
Counted as one query it made the whole process look slow, and the shedding rule of
``limits.py`` refused every tenant's searches with 503. Here such a call holds its estimated
tokens of its own tenant's budget (``tenant_max_model_tokens``, per api process) while it
runs. A call that does not fit waits — in the event loop, holding no worker thread — behind
its own tenant's earlier calls only; it is refused with 429 ``tenant_overloaded`` when its
tenant already has several budgets' worth waiting, or when its wait reaches the deadline. A
call larger than the whole budget runs once its tenant has nothing else running. Other
tenants never wait for it: the model takes their query embeddings between its batches
(``embed/bundled.py``).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from shardrag.errors import TenantOverloaded

#: What a tenant may have waiting, in budgets: beyond, a call is refused at once.
_QUEUE_BUDGETS = 4
#: The most tokens the model reads of one text (all-MiniLM-L6-v2 truncates at 256).
MAX_TOKENS_PER_TEXT = 256


def embedding_cost(texts: Iterable[str]) -> int:
    """The tokens embedding ``texts`` costs, estimated without tokenizing (about 4
    characters a token, at most the model's window a text, plus its two special tokens)."""
    return sum(min(math.ceil(len(text) / 4), MAX_TOKENS_PER_TEXT) + 2 for text in texts)


class ModelBudget:
    """Tokens of model work in flight per tenant, in one api process (see the module)."""

    def __init__(self, per_tenant_tokens: int, max_wait_seconds: float) -> None:
        self.per_tenant_tokens = per_tenant_tokens
        self.max_wait_seconds = max_wait_seconds
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._waiting: dict[str, deque[tuple[int, asyncio.Future[None]]]] = {}

    @asynccontextmanager
    async def hold(self, tenant: str, cost: int) -> AsyncIterator[None]:
        """Hold ``cost`` tokens of ``tenant``'s budget for the block; wait for them if they do
        not fit now; ``TenantOverloaded`` if they cannot be had in time."""
        if self.per_tenant_tokens <= 0:
            yield
            return
        granted = await self._acquire(tenant, cost)
        try:
            yield
        finally:
            self._release(tenant, granted)

    async def _acquire(self, tenant: str, cost: int) -> int:
        with self._lock:
            queue = self._waiting.setdefault(tenant, deque())
            held = self._held.get(tenant, 0)
            if not queue and self._fits(held, cost):
                self._held[tenant] = held + cost
                return cost
            queued = sum(c for c, _ in queue)
            if queued + cost > _QUEUE_BUDGETS * self.per_tenant_tokens:
                raise self._refused(tenant, "has that much model work waiting already")
            ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue.append((cost, ticket))
        try:
            await asyncio.wait_for(asyncio.shield(ticket), self.max_wait_seconds)
        except TimeoutError:
            self._give_up(tenant, cost, ticket)
            raise self._refused(
                tenant, f"waited {self.max_wait_seconds:g} s for its turn"
            ) from None
        except asyncio.CancelledError:  # the caller went away while waiting
            self._give_up(tenant, cost, ticket)
            raise
        return cost

    def _give_up(self, tenant: str, cost: int, ticket: asyncio.Future[None]) -> None:
        """Leave the queue; or, if the tokens were granted as the wait ended, give them back."""
        with self._lock:
            queue = self._waiting.get(tenant, deque())
            entry = (cost, ticket)
            waiting = entry in queue
            if waiting:
                queue.remove(entry)
                ticket.cancel()
                if not queue:
                    self._waiting.pop(tenant, None)
        if not waiting:
            self._release(tenant, cost)

    def _fits(self, held: int, cost: int) -> bool:
        return held == 0 or held + cost <= self.per_tenant_tokens

    def _release(self, tenant: str, cost: int) -> None:
        with self._lock:
            held = self._held.get(tenant, 0) - cost
            queue = self._waiting.get(tenant, deque())
            while queue and self._fits(held, queue[0][0]):
                next_cost, ticket = queue.popleft()
                held += next_cost
                ticket.get_loop().call_soon_threadsafe(_grant, ticket)
            if held > 0:
                self._held[tenant] = held
            else:
                self._held.pop(tenant, None)
            if not queue:
                self._waiting.pop(tenant, None)

    def in_flight(self, tenant: str) -> int:
        """Tokens of ``tenant`` held now."""
        with self._lock:
            return self._held.get(tenant, 0)

    def _refused(self, tenant: str, why: str) -> TenantOverloaded:
        return TenantOverloaded(
            f"tenant {tenant!r} {why} (tenant_max_model_tokens {self.per_tenant_tokens} "
            "tokens in flight per api process); retry in 1 s",
            retry_after=1,
            limit=self.per_tenant_tokens,
        )


def _grant(ticket: asyncio.Future[None]) -> None:
    if not ticket.done():
        ticket.set_result(None)
