"""One behaviour suite, run against both ``RagService``s: ``Shardrag`` in this process and
``ShardragClient`` over HTTP to a served ``Shardrag``. Same calls, same result types, same
errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from shardrag import Shardrag
from shardrag.api import create_app
from shardrag.client import ShardragClient
from shardrag.cluster.shardmap import ClusterStatus
from shardrag.context import AnswerResult, AnswerStream, citations_in
from shardrag.errors import (
    DocumentNotFound,
    EmptyDocument,
    EmptyQuery,
    IdempotencyConflict,
    InvalidInput,
)
from shardrag.models import DocumentInfo, DocumentInput, Hit, VersionState, WriteResult
from shardrag.pipeline.reconcile import ReconcileReport
from shardrag.service import RagService
from tests.support import served

ROOT_KEY = "root-key-of-the-service-suite-0123456789"
TENANT = "acme"
HANDBOOK = (
    b"Every shard has three replicas. When a node fails, the router asks another replica "
    b"of the same shard, so searches go on while the node is replaced."
)


@dataclass
class Under:
    """A service for the tenant's documents, and one for the operator's calls (the same
    object embedded; over HTTP, clients with a tenant admin key and the root key)."""

    tenant: RagService
    operator: RagService


@pytest.fixture(scope="module", params=["embedded", "http"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Under]:
    rag = Shardrag.open(
        tmp_path_factory.mktemp("service") / "data",
        shards=2,
        admin_key=ROOT_KEY,
        rate_limit_per_second=0,
    )
    try:
        if request.param == "embedded":
            yield Under(rag, rag)
            return
        with served(create_app(rag)) as url:
            root = {"Authorization": f"Bearer {ROOT_KEY}"}
            made = httpx.post(f"{url}/v1/tenants", json={"id": TENANT}, headers=root)
            assert made.status_code == 201, made.text
            key = httpx.post(
                f"{url}/v1/tenants/{TENANT}/keys", json={"role": "admin"}, headers=root
            )
            assert key.status_code == 201, key.text
            with (
                ShardragClient(url, key.json()["key"]) as tenant,
                ShardragClient(url, ROOT_KEY) as operator,
            ):
                yield Under(tenant, operator)
    finally:
        rag.close()


def test_both_are_rag_services(service: Under) -> None:
    assert isinstance(service.tenant, RagService)
    assert isinstance(service.operator, RagService)


def test_a_document_is_written_read_found_answered_and_deleted(service: Under) -> None:
    rag = service.tenant
    written = rag.put_document(TENANT, "guides/handbook.md", HANDBOOK, filename="handbook.md")
    assert isinstance(written, WriteResult)
    assert written.state is VersionState.LIVE and written.chunk_count >= 1

    info = rag.get_document(TENANT, "guides/handbook.md")
    assert isinstance(info, DocumentInfo)
    assert (info.version, info.state, info.chunk_count) == (
        written.version,
        VersionState.LIVE,
        written.chunk_count,
    )
    listed = rag.list_documents(TENANT, state="live")
    assert "guides/handbook.md" in [d.doc_id for d in listed]
    assert all(isinstance(d, DocumentInfo) for d in listed)

    hits = rag.search(TENANT, "what happens when a node fails?", k=3)
    assert hits and all(isinstance(h, Hit) for h in hits)
    assert hits[0].doc_id == "guides/handbook.md"

    answer = rag.answer(TENANT, "how many replicas does a shard have?")
    assert isinstance(answer, AnswerResult)
    assert "three replicas" in answer.answer.text
    assert [c.doc_id for c in answer.answer.citations] == ["guides/handbook.md"]

    deleted = rag.delete_document(TENANT, "guides/handbook.md")
    assert deleted.state is VersionState.DELETED
    assert rag.get_document(TENANT, "guides/handbook.md").state is VersionState.DELETED
    assert not [h for h in rag.search(TENANT, "replicas", k=3) if h.doc_id == "guides/handbook.md"]


def test_answers_search_in_the_mode_asked_and_stream_the_same_answer(service: Under) -> None:
    rag = service.tenant
    rag.put_document(TENANT, "modes/failover.txt", HANDBOOK)
    question = "how many replicas does a shard have?"
    whole = rag.answer(TENANT, question, mode="keyword", filters={})
    assert "three replicas" in whole.answer.text
    # A question sharing no word with any document: keyword search finds no passage to
    # answer from, dense search still ranks one; the mode reaches the search.
    paraphrase = "copies kept per partition?"
    assert rag.search(TENANT, paraphrase, mode="keyword") == []
    assert rag.answer(TENANT, paraphrase, mode="keyword").hits == []
    assert rag.answer(TENANT, paraphrase, mode="dense").hits

    stream = rag.answer_stream(TENANT, question, mode="keyword")
    assert isinstance(stream, AnswerStream)
    assert stream.generated is False
    assert [h.doc_id for h in stream.hits] == [h.doc_id for h in whole.hits]
    assert stream.context.passages
    assert {p.doc_id for p in stream.context.passages} <= {h.doc_id for h in stream.hits}
    text = "".join(stream.pieces).strip()
    assert text == whole.answer.text
    assert citations_in(text, stream.context) == whole.answer.citations

    with pytest.raises(EmptyQuery):
        rag.answer_stream(TENANT, "   ")


def test_a_retry_with_the_same_idempotency_key_writes_nothing_new(service: Under) -> None:
    rag = service.tenant
    first = rag.put_document(TENANT, "idem.txt", b"first words", idempotency_key="upload-1")
    again = rag.put_document(TENANT, "idem.txt", b"first words", idempotency_key="upload-1")
    assert not first.replayed and again.replayed
    assert again == first  # the same version, state and token
    assert rag.get_document(TENANT, "idem.txt").latest.version == first.version
    with pytest.raises(IdempotencyConflict):
        rag.put_document(TENANT, "idem.txt", b"other words", idempotency_key="upload-1")
    assert rag.get_document(TENANT, "idem.txt").latest.version == first.version
    fresh = rag.put_document(TENANT, "idem.txt", b"other words", idempotency_key="upload-2")
    assert fresh.version == first.version + 1 and not fresh.replayed


def test_a_session_read_sees_a_write_that_did_not_wait(service: Under) -> None:
    rag = service.tenant
    pending = rag.put_document(TENANT, "late.txt", b"walruses gather on the ice floe", wait=False)
    assert pending.write_token
    hits = rag.search(
        TENANT, "walruses ice", read_concern="session", write_token=pending.write_token
    )
    assert [h.doc_id for h in hits][:1] == ["late.txt"]


def test_access_groups_pass_through_every_call(service: Under) -> None:
    rag = service.tenant
    rag.put_document(TENANT, "acl/hr.txt", b"Otters handle payroll in HR.", acl=["hr"])
    batch = rag.put_documents(
        TENANT, [DocumentInput("acl/eng.txt", b"Otters build the engine.", acl=("eng",))]
    )
    assert isinstance(batch[0], WriteResult)
    assert rag.get_document(TENANT, "acl/hr.txt").acl == ("hr",)
    assert rag.get_document(TENANT, "acl/eng.txt").acl == ("eng",)

    def found(groups: list[str] | None) -> set[str]:
        hits = rag.search(TENANT, "otters", k=10, groups=groups)
        return {h.doc_id for h in hits if h.doc_id.startswith("acl/")}

    assert found(None) == {"acl/hr.txt", "acl/eng.txt"}
    assert found(["hr"]) == {"acl/hr.txt"}
    assert found([]) == set()
    answer = rag.answer(TENANT, "who handles payroll?", groups=["eng"])
    assert "acl/hr.txt" not in {h.doc_id for h in answer.hits}
    with pytest.raises(DocumentNotFound):
        rag.get_document(TENANT, "acl/hr.txt", groups=["eng"])
    listed = rag.list_documents(TENANT, groups=["eng"])
    assert "acl/hr.txt" not in [d.doc_id for d in listed]
    assert "acl/eng.txt" in [d.doc_id for d in listed]
    assert rag.get_original(TENANT, "acl/hr.txt") == b"Otters handle payroll in HR."
    with pytest.raises(DocumentNotFound):
        rag.get_original(TENANT, "acl/hr.txt", groups=["eng"])
    with pytest.raises(DocumentNotFound):
        rag.get_original(TENANT, "no/such.txt")


def test_a_batch_reports_one_outcome_per_document_in_order(service: Under) -> None:
    outcomes = service.tenant.put_documents(
        TENANT,
        [
            DocumentInput("batch/a.txt", b"apples and pears"),
            DocumentInput("batch/empty.txt", b""),
            DocumentInput("batch/b.txt", b"plums and cherries"),
        ],
    )
    assert [type(o) for o in outcomes] == [WriteResult, EmptyDocument, WriteResult]


def test_errors_are_the_same_exceptions(service: Under) -> None:
    with pytest.raises(DocumentNotFound):
        service.tenant.get_document(TENANT, "never-written.txt")
    with pytest.raises(EmptyQuery):
        service.tenant.search(TENANT, "   ")
    # The HTTP schema refuses k=0 before the service sees it (invalid_request), the service
    # itself with invalid_parameter: both are the caller's input.
    with pytest.raises(InvalidInput):
        service.tenant.search(TENANT, "anything", k=0)


def test_operators_get_typed_reports(service: Under) -> None:
    service.tenant.put_document(TENANT, "ops.txt", b"operators read reports")
    report = service.operator.reconcile(dry_run=True)
    assert isinstance(report, ReconcileReport)
    assert report.dry_run and report.shards == [0, 1] and report.versions_checked >= 1
    status = service.operator.cluster_status()
    assert isinstance(status, ClusterStatus)
    assert status.layout.shards == 2
    assert [n.node_id for n in status.nodes] == ["local"]
    assert set(status.heads) == {0, 1}
    assert service.tenant.dead_letters(TENANT) == []
