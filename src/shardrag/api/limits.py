"""Admission of queries (search and answer) in one api process: per-tenant concurrency
limits and load shedding.

Per tenant: at most ``per_tenant`` queries in flight in this process; one more is refused at
once with 429 ``tenant_overloaded``, before any work (no embedding, no routing), so one tenant
flooding an api process holds only its own share of it. The limit is per api process: N
processes behind a balancer let a tenant have up to N times as many queries in flight.

Load shedding: a query that cannot finish within its deadline (``search_timeout_seconds``)
is better refused now than worked on. Two rules, both 503 ``overloaded``:

- at the door: a new query takes about (queries in flight + 1) × the recent cost per query,
  where the cost per query is the time the process was busy (had queries in flight) divided
  by the queries it finished in that time, over its last ``_WINDOW`` queries: the inverse of
  its throughput (Little's law). Busy time counts at most the CPU time the process spent in
  it (``cpu_clock``): a query that waits for a read concern (a session read waiting for its
  write to be indexed) holds no capacity, and must not make the next queries look late.
  Above the deadline, refused. A query alone in the process is never refused;
- at the start of work: a query that already waited its whole deadline for a worker thread
  is refused rather than run.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from shardrag.errors import Overloaded, TenantOverloaded

# Queries over which the recent cost per query is measured.
_WINDOW = 32


@dataclass(frozen=True)
class QueryTicket:
    """An admitted query: its tenant and when it was admitted."""

    tenant: str
    admitted_at: float


@dataclass(frozen=True)
class AdmissionStats:
    """What admission refused so far, for the metrics."""

    tenant_rejections: dict[str, int] = field(default_factory=dict)
    shed: int = 0


class QueryAdmission:
    """Admits queries of one api process, or refuses them (see the module). Thread-safe."""

    def __init__(
        self,
        per_tenant: int,
        deadline_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] | None = None,
    ) -> None:
        self.per_tenant = per_tenant
        self.deadline_seconds = deadline_seconds
        self.clock = clock
        self.cpu_clock = cpu_clock
        self._cpu_from = 0.0
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._total = 0
        # Busy seconds between one finished query and the next, for the last ones.
        self._busy: deque[float] = deque(maxlen=_WINDOW)
        self._busy_from = 0.0  # the end of the busy time counted so far
        self._rejections: dict[str, int] = {}
        self._shed = 0

    def admit(self, tenant: str) -> QueryTicket:
        """Admit a query of ``tenant`` (release its ticket when it ends), or raise
        ``TenantOverloaded`` / ``Overloaded``."""
        with self._lock:
            running = self._in_flight.get(tenant, 0)
            if self.per_tenant and running >= self.per_tenant:
                self._rejections[tenant] = self._rejections.get(tenant, 0) + 1
                raise TenantOverloaded(
                    f"tenant {tenant!r} has {running} queries in flight, the most an api "
                    "process allows (tenant_max_concurrent_queries); retry in 1 s",
                    retry_after=1,
                    limit=self.per_tenant,
                )
            expected = self.expected_seconds()
            if self._total > 0 and expected > self.deadline_seconds:
                self._shed += 1
                raise self._overloaded(
                    f"{self._total} queries in flight would take this one about "
                    f"{expected:.1f} s, past its deadline of {self.deadline_seconds:g} s",
                    expected - self.deadline_seconds,
                )
            now = self.clock()
            if self._total == 0:
                self._busy_from = now  # idle time is no cost
                self._cpu_from = self.cpu_clock() if self.cpu_clock else 0.0
            self._in_flight[tenant] = running + 1
            self._total += 1
            return QueryTicket(tenant, now)

    def expected_seconds(self) -> float:
        """How long a query admitted now would take (0 before any query ended)."""
        cost = sum(self._busy) / len(self._busy) if self._busy else 0.0
        return (self._total + 1) * cost

    def check_started(self, ticket: QueryTicket) -> None:
        """At the start of the query's work: ``Overloaded`` if its deadline has passed."""
        waited = self.clock() - ticket.admitted_at
        if waited >= self.deadline_seconds:
            with self._lock:
                self._shed += 1
            raise self._overloaded(
                f"the query waited {waited:.1f} s for a worker, past its deadline of "
                f"{self.deadline_seconds:g} s",
                1.0,
            )

    def release(self, ticket: QueryTicket) -> None:
        """The query ended (however): its slot is free, the busy time since the last one
        ended is its cost."""
        with self._lock:
            left = self._in_flight.get(ticket.tenant, 1) - 1
            if left > 0:
                self._in_flight[ticket.tenant] = left
            else:
                self._in_flight.pop(ticket.tenant, None)
            self._total -= 1
            now = self.clock()
            busy = now - self._busy_from
            if self.cpu_clock is not None:
                cpu = self.cpu_clock()
                busy = min(busy, cpu - self._cpu_from)
                self._cpu_from = cpu
            self._busy.append(busy)
            self._busy_from = now

    def stats(self) -> AdmissionStats:
        """The refusals so far."""
        with self._lock:
            return AdmissionStats(dict(self._rejections), self._shed)

    @staticmethod
    def _overloaded(message: str, retry_after: float) -> Overloaded:
        seconds = max(1, math.ceil(retry_after))
        return Overloaded(f"{message}; retry in {seconds} s", retry_after=seconds)


def shed_if_late(request: Request) -> None:
    """The second rule, for a query route at the start of its work (``Overloaded`` if the
    query's deadline passed while it waited)."""
    ticket = getattr(request.state, "query_ticket", None)
    admission = getattr(request.app.state, "query_admission", None)
    if isinstance(ticket, QueryTicket) and isinstance(admission, QueryAdmission):
        admission.check_started(ticket)
