"""A load generator for a running cluster: tenants that must never see each other's documents,
clients searching them and a writer putting documents, all counted per phase.

Every tenant's documents carry its marker (``owner<tenant>``) in their text and their metadata,
and use one vocabulary shared by all tenants: a query matches every tenant's documents, so a
tenant filter that failed anywhere would show. Every hit of every search is checked to belong to
the querying tenant. The writer records each accepted write (202 with a write token) apart from
each attempt that was not (an error status, a timeout): only the accepted ones were promised.

A request counts in the phase (``baseline``, ``fault``, ``recovery``, ...) current when it
started, except that one that ran while the ``fault`` phase was current counts in ``fault``:
a search that started before a fault and hung in it met the fault. The chaos suite
(``tests/chaos/harness.py``) drives it.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

#: The words every tenant's documents and every query are made of.
VOCABULARY = (
    "library",
    "catalog",
    "index",
    "retrieval",
    "citation",
    "journal",
    "abstract",
    "thesaurus",
    "indexing",
    "classification",
    "document",
    "relevance",
    "query",
    "search",
    "evaluation",
    "precision",
    "recall",
)
#: Longer than the router's search deadline (10 s) and the registry pool's wait (30 s): a
#: request the service gives up on is seen as its error, not as the client's timeout.
REQUEST_TIMEOUT_SECONDS = 40.0
#: The phase a request that ran during it counts in, wherever it started.
FAULT_PHASE = "fault"
#: Of every three writes, one updates a document written before (a new version of it).
_UPDATE_EVERY = 3


@dataclass(frozen=True)
class LoadTenant:
    """A tenant of the load, with a reader and a writer key."""

    id: str
    reader_key: str
    writer_key: str

    @property
    def marker(self) -> str:
        """The word in the text of each of its documents, and no other tenant's."""
        return f"owner{self.id}"


def document_text(tenant: LoadTenant, doc_id: str, unique_word: str) -> bytes:
    """A small document of ``tenant``: its marker, words of the shared vocabulary chosen by
    ``doc_id``, and ``unique_word`` (which a keyword search finds in this version only)."""
    seed = zlib.crc32(doc_id.encode())
    words = [VOCABULARY[(seed >> (2 * i)) % len(VOCABULARY)] for i in range(12)]
    return f"{tenant.marker} {unique_word} {' '.join(words)}\n".encode()


def document_metadata(tenant: LoadTenant) -> dict[str, str]:
    """The metadata of each of ``tenant``'s documents: its id, checked on every hit."""
    return {"owner": tenant.id}


def put_document(
    client: httpx.Client, tenant: LoadTenant, doc_id: str, unique_word: str, wait: bool = False
) -> httpx.Response:
    """PUT a version of a load document (raw text body, metadata as a query parameter)."""
    return client.put(
        f"/v1/tenants/{tenant.id}/documents/{doc_id}",
        params={
            "wait": str(wait).lower(),
            "filename": f"{doc_id}.txt",
            "metadata": json.dumps(document_metadata(tenant)),
        },
        content=document_text(tenant, doc_id, unique_word),
        headers={"Authorization": f"Bearer {tenant.writer_key}", "Content-Type": "text/plain"},
    )


def foreign_hits(tenant: LoadTenant, hits: list[dict[str, Any]]) -> list[str]:
    """The hits of a search by ``tenant`` that are not its own (``doc_id`` and why)."""
    found = []
    for hit in hits:
        owner = (hit.get("metadata") or {}).get("owner")
        if owner != tenant.id or tenant.marker not in hit.get("text", ""):
            found.append(f"{hit.get('doc_id')} (owner {owner!r}) in a search of {tenant.id}")
    return found


@dataclass(frozen=True)
class AcceptedWrite:
    """A write the service accepted: 202 with its version and write token."""

    tenant: str
    doc_id: str
    version: int
    write_token: str
    #: A word only this version's text holds.
    unique_word: str
    phase: str


@dataclass
class PhaseCounts:
    """What the load met during one phase."""

    name: str
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    searches: int = 0
    #: Seconds of each search that succeeded (200, at least one hit, none foreign).
    latencies: list[float] = field(default_factory=list)
    #: Failed searches by what they met (status and error code, or the exception).
    search_failures: Counter[str] = field(default_factory=Counter)
    #: Hits of another tenant: must stay empty.
    cross_tenant: list[str] = field(default_factory=list)
    writes: int = 0
    accepted_writes: int = 0
    #: Writes not accepted, by what they met.
    write_failures: Counter[str] = field(default_factory=Counter)

    @property
    def succeeded(self) -> int:
        """Searches that succeeded."""
        return len(self.latencies)

    @property
    def availability(self) -> float | None:
        """Successful searches / attempted searches (None: none attempted)."""
        return self.succeeded / self.searches if self.searches else None

    @property
    def seconds(self) -> float:
        """How long the phase lasted (so far)."""
        return (self.ended or time.monotonic()) - self.started

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts (latencies in milliseconds)."""
        return {
            "name": self.name,
            "seconds": round(self.seconds, 2),
            "searches": self.searches,
            "succeeded": self.succeeded,
            "availability": self.availability,
            "search_failures": dict(self.search_failures),
            "cross_tenant": list(self.cross_tenant),
            "writes": self.writes,
            "accepted_writes": self.accepted_writes,
            "write_failures": dict(self.write_failures),
            "latencies_ms": [round(s * 1000, 2) for s in self.latencies],
        }


def _failure(response: httpx.Response) -> str:
    """``<status> <error code>`` of an error answer."""
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = "no error body"
    return f"{response.status_code} {code}"


class LoadGenerator:
    """Searching clients and one writer against ``api_url``, until ``stop``.

    Each searching client has its own keep-alive connection and goes round the tenants; each
    query is two words of the vocabulary and a word of its own, so that no query is answered
    from the result cache and every one reaches the index nodes (Redis is still asked: the
    lookup, the store, the query vector). The writer puts a document every
    ``write_interval`` seconds, round the tenants: mostly new ones, every third one a new
    version of one it wrote before.
    """

    def __init__(
        self,
        api_url: str,
        tenants: list[LoadTenant],
        searchers: int = 3,
        write_interval: float = 0.1,
        k: int = 5,
    ) -> None:
        self.api_url = api_url
        self.tenants = tenants
        self.searchers = searchers
        self.write_interval = write_interval
        self.k = k
        self.phases: dict[str, PhaseCounts] = {}
        self.accepted: list[AcceptedWrite] = []
        #: The phases in the order they began; the last one is current.
        self._order: list[PhaseCounts] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, phase: str) -> None:
        """Start the clients, counting in ``phase``."""
        self.phase(phase)
        targets = [self._searcher] * self.searchers + [self._writer]
        for n, target in enumerate(targets):
            thread = threading.Thread(target=target, args=(n,), name=f"load-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def phase(self, name: str) -> None:
        """Count what starts from now on in the phase ``name`` (a new one)."""
        with self._lock:
            if self._order:
                self._order[-1].ended = time.monotonic()
            self.phases[name] = PhaseCounts(name)
            self._order.append(self.phases[name])

    def stop(self) -> dict[str, PhaseCounts]:
        """Stop the clients (each finishes its request) and return the phases."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT_SECONDS + 10)
        with self._lock:
            if self._order and self._order[-1].ended is None:
                self._order[-1].ended = time.monotonic()
        return self.phases

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=REQUEST_TIMEOUT_SECONDS, trust_env=False)

    def _phase(self) -> int:
        """The index of the current phase."""
        with self._lock:
            assert self._order, "start() sets a phase"
            return len(self._order) - 1

    def _counted_in(self, started_in: int) -> PhaseCounts:
        """Where a request that started in phase ``started_in`` and ends now counts: the fault
        phase if it ran during it, else the phase it started in. Called with the lock held."""
        overlapped = self._order[started_in:]
        return next((p for p in overlapped if p.name == FAULT_PHASE), overlapped[0])

    def _searcher(self, n: int) -> None:
        with self._client() as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                tenant = self.tenants[(n + i) % len(self.tenants)]
                first = VOCABULARY[(n + i) % len(VOCABULARY)]
                second = VOCABULARY[(7 * i) % len(VOCABULARY)]
                query = f"{first} {second} q{secrets.token_hex(3)}"
                started_in = self._phase()
                started = time.monotonic()
                failure: str | None = None
                foreign: list[str] = []
                try:
                    answer = client.post(
                        f"/v1/tenants/{tenant.id}/search",
                        json={"query": query, "k": self.k},
                        headers={"Authorization": f"Bearer {tenant.reader_key}"},
                    )
                    if answer.status_code != 200:
                        failure = _failure(answer)
                    else:
                        hits = answer.json()["hits"]
                        foreign = foreign_hits(tenant, hits)
                        if not hits:
                            failure = "200 without hits"
                        elif foreign:
                            failure = "200 with another tenant's hits"
                except httpx.HTTPError as exc:
                    failure = type(exc).__name__
                seconds = time.monotonic() - started
                with self._lock:
                    phase = self._counted_in(started_in)
                    phase.searches += 1
                    phase.cross_tenant += foreign
                    if failure is None:
                        phase.latencies.append(seconds)
                    else:
                        phase.search_failures[failure] += 1

    def _writer(self, _: int) -> None:
        written: dict[str, list[str]] = {t.id: [] for t in self.tenants}
        with self._client() as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                tenant = self.tenants[i % len(self.tenants)]
                mine = written[tenant.id]
                if mine and i % _UPDATE_EVERY == 0:
                    doc_id = mine[(i // _UPDATE_EVERY) % len(mine)]
                else:
                    doc_id = f"w-{secrets.token_hex(4)}"
                unique_word = f"v{secrets.token_hex(5)}"
                started_in = self._phase()
                body: dict[str, Any] | None = None
                failure: str | None = None
                try:
                    answer = put_document(client, tenant, doc_id, unique_word)
                    if answer.status_code == 202 and answer.json().get("write_token"):
                        body = answer.json()
                    else:
                        failure = _failure(answer)
                except httpx.HTTPError as exc:
                    # No answer: nothing was promised, whatever the service did with it.
                    failure = type(exc).__name__
                with self._lock:
                    phase = self._counted_in(started_in)
                    phase.writes += 1
                    if body is not None:
                        phase.accepted_writes += 1
                        self.accepted.append(
                            AcceptedWrite(
                                tenant.id,
                                doc_id,
                                int(body["version"]),
                                body["write_token"],
                                unique_word,
                                phase.name,
                            )
                        )
                        if doc_id not in mine:
                            mine.append(doc_id)
                    else:
                        phase.write_failures[str(failure)] += 1
                self._stop.wait(self.write_interval)
