"""A Python client of the shardrag HTTP API: a ``RagService`` with the same types as ``Shardrag``.

    >>> client = ShardragClient("http://127.0.0.1:8080", api_key="srk_...")  # doctest: +SKIP
    >>> client.search("acme", "how do shards fail over?", k=5)               # doctest: +SKIP

Errors come back as the ``ShardragError`` subclass the server named by its code, so callers
handle a remote ``document_not_found`` exactly like an embedded one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from shardrag.cluster.shardmap import ClusterStatus
from shardrag.context import Answer, AnswerResult, AnswerStream, Citation, Context
from shardrag.errors import ShardragError, Unavailable, error_from
from shardrag.models import (
    DeadLetterInfo,
    DocumentInfo,
    DocumentInput,
    Fusion,
    Hit,
    Metadata,
    ReadConcern,
    SearchMode,
    VersionState,
    WriteResult,
)
from shardrag.pipeline.reconcile import ReconcileReport
from shardrag.tls import tls_context


def _error_from(response: httpx.Response) -> ShardragError:
    try:
        body = response.json()["error"]
        return error_from(body["code"], body["message"], **(body.get("details") or {}))
    except (ValueError, KeyError, TypeError):
        return Unavailable(
            f"the server answered {response.status_code} without an error body",
            status=response.status_code,
        )


def _hit(raw: dict[str, Any]) -> Hit:
    return Hit(**raw)


def _citation(raw: dict[str, Any]) -> Citation:
    return Citation(**{**raw, "chunk_indexes": tuple(raw["chunk_indexes"])})


def _answer_body(
    question: str,
    k: int,
    max_context_tokens: int | None,
    filters: Metadata | None,
    mode: SearchMode | str,
) -> dict[str, Any]:
    body: dict[str, Any] = {"question": question, "k": k, "mode": _value(mode)}
    if max_context_tokens is not None:
        body["max_context_tokens"] = max_context_tokens
    if filters:
        body["filters"] = filters
    return body


def _pieces(events: Generator[tuple[str, dict[str, Any]], None, None]) -> Iterator[str]:
    """The answer's text from its ``delta`` events; an ``error`` event raised as its error."""
    for name, data in events:
        if name == "delta":
            yield data["text"]
        elif name == "error":
            error = data.get("error") or {}
            raise error_from(
                error.get("code", "unavailable"),
                error.get("message", "the answer failed"),
                **(error.get("details") or {}),
            )
        elif name == "done":
            events.close()  # the server ends the stream here: release the connection now
            return


def _narrowed(groups: Iterable[str] | None) -> dict[str, str]:
    """The header that narrows the key's access groups to ``groups`` (none: no narrowing)."""
    return {} if groups is None else {"X-Shardrag-Groups": ",".join(groups)}


def _value(value: Any) -> str:
    """An enum as its wire value, anything else as text."""
    return str(getattr(value, "value", value))


class ShardragClient:
    """Talks to a running ``shardrag serve`` with one API key (thread-safe)."""

    #: Documents sent at once by ``put_documents``.
    PARALLEL_UPLOADS = 4

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout: float = 600.0,
        ca_file: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
    ) -> None:
        """``ca_file``: the CA that signed an ``https://`` server's certificate (default: the
        system's); ``client_cert``/``client_key``: this client's certificate (PEM) for a
        server that requires mutual TLS (``serve --tls-client-ca``)."""
        self.url = url.rstrip("/")
        cert = (client_cert, client_key) if client_cert and client_key else client_cert
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            verify=tls_context(ca_file, cert) if ca_file or cert else True,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {self.url}: {exc}", url=self.url) from None
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    @staticmethod
    def _documents(tenant: str, doc_id: str | None = None) -> str:
        path = f"/v1/tenants/{quote(tenant, safe='')}/documents"
        return path if doc_id is None else f"{path}/{quote(doc_id, safe='/')}"

    # -- documents ------------------------------------------------------------------------

    def put_document(
        self,
        tenant: str,
        doc_id: str,
        data: bytes,
        filename: str | None = None,
        metadata: Metadata | None = None,
        content_type: str | None = None,
        title: str | None = None,
        wait: bool = True,
        idempotency_key: str | None = None,
        acl: Iterable[str] | None = None,
    ) -> WriteResult:
        """Store a version; with ``wait`` (default) return once it is live."""
        params: dict[str, Any] = {"wait": "true" if wait else "false"}
        if filename:
            params["filename"] = filename
        if metadata:
            params["metadata"] = json.dumps(metadata)
        if title:
            params["title"] = title
        headers = {"Content-Type": content_type or "application/octet-stream"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        if acl:
            headers["X-Shardrag-Acl"] = ",".join(acl)
        response = self._send(
            "PUT", self._documents(tenant, doc_id), content=data, params=params, headers=headers
        )
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        return dataclasses.replace(WriteResult.from_dict(response.json()), replayed=replayed)

    def put_documents(
        self, tenant: str, documents: Iterable[DocumentInput]
    ) -> list[WriteResult | ShardragError]:
        """Store many documents (a few at a time); one outcome per document, in order."""

        def put(document: DocumentInput) -> WriteResult | ShardragError:
            try:
                return self.put_document(
                    tenant,
                    document.doc_id,
                    document.data,
                    document.filename,
                    document.metadata,
                    document.content_type,
                    document.title,
                    acl=document.acl,
                )
            except ShardragError as exc:
                return exc

        with ThreadPoolExecutor(self.PARALLEL_UPLOADS) as pool:
            return list(pool.map(put, documents))

    def delete_document(
        self, tenant: str, doc_id: str, groups: Iterable[str] | None = None
    ) -> WriteResult:
        """Delete a document (``groups`` narrows the key's: one outside them is not found)."""
        raw = self._call("DELETE", self._documents(tenant, doc_id), headers=_narrowed(groups))
        return WriteResult.from_dict(raw)

    def get_document(
        self, tenant: str, doc_id: str, groups: Iterable[str] | None = None
    ) -> DocumentInfo:
        """A document's live and latest versions, as ``Shardrag.get_document``."""
        raw = self._call("GET", self._documents(tenant, doc_id), headers=_narrowed(groups))
        return DocumentInfo.from_dict(raw)

    def get_original(self, tenant: str, doc_id: str, groups: Iterable[str] | None = None) -> bytes:
        """The live version's original bytes, as ``Shardrag.get_original``."""
        path = f"/v1/tenants/{quote(tenant, safe='')}/originals/{quote(doc_id, safe='/')}"
        return self._send("GET", path, headers=_narrowed(groups)).content

    def list_documents(
        self,
        tenant: str,
        state: VersionState | str | None = None,
        limit: int = 100,
        after: str | None = None,
        groups: Iterable[str] | None = None,
    ) -> list[DocumentInfo]:
        """A page of documents by id, as ``Shardrag.list_documents``."""
        params: dict[str, Any] = {"limit": limit}
        if state is not None:
            params["state"] = _value(state)
        if after:
            params["after"] = after
        page = self._call("GET", self._documents(tenant), params=params, headers=_narrowed(groups))[
            "documents"
        ]
        return [DocumentInfo.from_dict(d) for d in page]

    def iter_documents(
        self, tenant: str, state: VersionState | str | None = None
    ) -> Iterator[DocumentInfo]:
        """Every document, page by page."""
        after: str | None = None
        while True:
            page = self.list_documents(tenant, state, 1000, after)
            yield from page
            if len(page) < 1000:
                return
            after = page[-1].doc_id

    # -- search ---------------------------------------------------------------------------

    def search(
        self,
        tenant: str,
        query: str,
        k: int = 10,
        mode: SearchMode | str = SearchMode.HYBRID,
        filters: Metadata | None = None,
        fusion: Fusion | str | None = None,
        read_concern: ReadConcern | str = ReadConcern.EVENTUAL,
        write_token: str | None = None,
        groups: Iterable[str] | None = None,
    ) -> list[Hit]:
        """The top-k passages, as ``Shardrag.search`` (``groups`` narrows the key's)."""
        body: dict[str, Any] = {
            "query": query,
            "k": k,
            "mode": _value(mode),
            "read_concern": _value(read_concern),
        }
        if filters:
            body["filters"] = filters
        if fusion is not None:
            body["fusion"] = _value(fusion)
        if write_token:
            body["write_token"] = write_token
        raw = self._call(
            "POST",
            f"/v1/tenants/{quote(tenant, safe='')}/search",
            json=body,
            headers=_narrowed(groups),
        )
        return [_hit(h) for h in raw["hits"]]

    def embed(self, tenant: str, texts: list[str], query: bool = False) -> list[list[float]]:
        """Vectors of ``texts`` by the server's model, as ``Shardrag.embed``."""
        body = {"texts": list(texts), "kind": "query" if query else "document"}
        raw = self._call("POST", f"/v1/tenants/{quote(tenant, safe='')}/embeddings", json=body)
        return [list(v) for v in raw["vectors"]]

    def answer(
        self,
        tenant: str,
        question: str,
        k: int = 8,
        max_context_tokens: int | None = None,
        filters: Metadata | None = None,
        groups: Iterable[str] | None = None,
        mode: SearchMode | str = SearchMode.HYBRID,
    ) -> AnswerResult:
        """An answer with citations, as ``Shardrag.answer``."""
        body = _answer_body(question, k, max_context_tokens, filters, mode)
        raw = self._call(
            "POST",
            f"/v1/tenants/{quote(tenant, safe='')}/answer",
            json=body,
            headers=_narrowed(groups),
        )
        citations = [_citation(c) for c in raw["citations"]]
        return AnswerResult(
            Answer(raw["answer"], citations, raw["generated"]), [_hit(h) for h in raw["hits"]]
        )

    def answer_stream(
        self,
        tenant: str,
        question: str,
        k: int = 8,
        max_context_tokens: int | None = None,
        filters: Metadata | None = None,
        groups: Iterable[str] | None = None,
        mode: SearchMode | str = SearchMode.HYBRID,
    ) -> AnswerStream:
        """The answer as the server writes it, as ``Shardrag.answer_stream`` (server-sent
        events). An error before the answer begins is raised here; one while it is written,
        by the iteration of ``pieces``. Read ``pieces`` to its end to release the connection.
        """
        body = {**_answer_body(question, k, max_context_tokens, filters, mode), "stream": True}
        events = self._events(
            f"/v1/tenants/{quote(tenant, safe='')}/answer", body, _narrowed(groups)
        )
        name, data = next(events)
        if name != "context":
            events.close()
            raise Unavailable(f"the answer stream began with {name!r}, not its context")
        passages = [_citation(p) for p in data["passages"]]
        context = Context(question, passages, prompt_tokens=0, dropped_hits=0)
        hits = [_hit(h) for h in data["hits"]]
        return AnswerStream(hits, context, _pieces(events), bool(data.get("generated")))

    def _events(
        self, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> Generator[tuple[str, dict[str, Any]], None, None]:
        """The server-sent events of a POST, (name, JSON data) each, as they arrive."""
        try:
            with self._http.stream(
                "POST", path, json=body, headers={**headers, "Accept": "text/event-stream"}
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response)
                name, data = "message", []
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        yield name, json.loads("\n".join(data))
                        name, data = "message", []
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {self.url}: {exc}", url=self.url) from None

    # -- lifecycle ------------------------------------------------------------------------

    def dead_letters(self, tenant: str, limit: int = 100) -> list[DeadLetterInfo]:
        """The tenant's dead letters (a tenant admin key, or the root key)."""
        body = self._call(
            "GET", f"/v1/tenants/{quote(tenant, safe='')}/dead-letters", params={"limit": limit}
        )
        return [DeadLetterInfo(**d) for d in body["dead_letters"]]

    def redrive(self, tenant: str, dead_letter_id: int) -> DeadLetterInfo:
        """Put a dead letter back in its stream."""
        body = self._call(
            "POST", f"/v1/tenants/{quote(tenant, safe='')}/dead-letters/{dead_letter_id}/redrive"
        )
        return DeadLetterInfo(**body)

    def reconcile(self, dry_run: bool = False) -> ReconcileReport:
        """One reconciliation pass on the server (the root key); its report."""
        report = self._call("POST", "/v1/admin/reconcile", params={"dry_run": str(dry_run).lower()})
        return ReconcileReport.from_dict(report)

    def rotate_master_key(self) -> int:
        """Re-wrap every data key under the server's master key (the root key); how many."""
        body = self._call("POST", "/v1/admin/security/rotate-master-key")
        return int(body["rewrapped"])

    def cluster_status(self) -> ClusterStatus:
        """The server's cluster status (the root key): layout, shards, live nodes and lag."""
        return ClusterStatus.from_dict(self._call("GET", "/v1/admin/cluster"))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ShardragClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
