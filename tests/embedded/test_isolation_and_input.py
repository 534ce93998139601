"""Tenant isolation and bad input through the public API."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from shardrag import Shardrag, VersionState
from shardrag.errors import (
    BinaryContent,
    DocumentNotFound,
    DocumentTooLarge,
    EmptyDocument,
    EmptyQuery,
    InvalidDocumentId,
    InvalidParameter,
    InvalidTenantId,
    ShardragError,
    TenantNotFound,
    UnparseableDocument,
    UnsupportedFormat,
)

DOC = b"Shards are replicated to three nodes; replicas apply the log in order."


@pytest.mark.parametrize("shards", [1, 2])
def test_identical_documents_of_two_tenants_never_mix(tmp_path: Path, shards: int) -> None:
    with Shardrag.open(tmp_path / "d", shards=shards) as rag:
        rag.put_document("alpha", "doc", DOC, filename="doc.txt", metadata={"owner": "alpha"})
        rag.put_document("beta", "doc", DOC, filename="doc.txt", metadata={"owner": "beta"})
        for tenant in ("alpha", "beta"):
            for mode in ("hybrid", "dense", "keyword"):
                hits = rag.search(tenant, "how are shards replicated", k=10, mode=mode)
                assert hits and {h.metadata["owner"] for h in hits} == {tenant}
        rag.delete_document("alpha", "doc")
        assert rag.search("alpha", "replicated", k=10) == []
        assert [h.metadata["owner"] for h in rag.search("beta", "replicated", k=10)] == ["beta"]
        # A filter cannot widen the tenant: it only narrows within it.
        assert rag.search("beta", "replicated", k=10, filters={"owner": "alpha"}) == []


def test_unknown_tenant_is_an_error_not_an_empty_result(rag: Shardrag) -> None:
    with pytest.raises(TenantNotFound):
        rag.search("nobody", "anything")
    with pytest.raises(TenantNotFound):
        rag.get_document("nobody", "doc")
    with pytest.raises(TenantNotFound):
        rag.delete_document("nobody", "doc")
    with pytest.raises(TenantNotFound):
        rag.list_documents("nobody")


def test_unknown_document_is_not_found(rag: Shardrag) -> None:
    rag.put_document("acme", "doc", DOC)
    with pytest.raises(DocumentNotFound):
        rag.get_document("acme", "missing")


@pytest.mark.parametrize(
    ("data", "filename", "error"),
    [
        (b"", "empty.txt", EmptyDocument),
        (b"   \n\t  \n", "blank.txt", EmptyDocument),
        (bytes(range(256)) * 64, "garbage.txt", BinaryContent),
        (b"%PDF-1.7\n1 0 obj <<>> broken", "broken.pdf", UnparseableDocument),
        (b"MZ\x90\x00\x03\x00\x00\x00", "program.exe", UnsupportedFormat),
        (b"<html><script>var x=1;</script><nav>menu</nav></html>", "empty.html", EmptyDocument),
    ],
)
def test_bad_documents_are_rejected_and_nothing_stored_is_lost(
    rag: Shardrag, data: bytes, filename: str, error: type[ShardragError]
) -> None:
    rag.put_document("acme", "keep", DOC, filename="keep.txt")
    with pytest.raises(error) as raised:
        rag.put_document("acme", "keep", data, filename=filename)
    assert raised.value.code == error.code and raised.value.message
    info = rag.get_document("acme", "keep")
    assert (info.state, info.version) == (VersionState.LIVE, 1)
    assert rag.search("acme", "replicated", k=1)[0].doc_id == "keep"


def test_non_utf8_text_is_decoded_not_rejected(rag: Shardrag) -> None:
    latin = "Café résumé: the naïve replica façade.".encode("cp1252")
    rag.put_document("acme", "latin", latin, filename="latin.txt")
    hit = rag.search("acme", "café façade", k=1)[0]
    assert "Café résumé" in hit.text


def test_a_50_mb_file_is_refused_with_the_limit(rag: Shardrag) -> None:
    rag.put_document("acme", "keep", DOC)
    with pytest.raises(DocumentTooLarge) as raised:
        rag.put_document("acme", "huge", b"a" * (50 * 1024 * 1024), filename="huge.txt")
    assert raised.value.details["limit"] == rag.settings.max_document_bytes
    assert rag.list_documents("acme")[0].doc_id == "keep"
    with pytest.raises(DocumentNotFound):
        rag.get_document("acme", "huge")


@pytest.mark.parametrize(
    "doc_id",
    [
        "../etc/passwd",
        "a/../b",
        "/abs",
        "a//b",
        "tab\there",
        "nul\x00",
        "",
        "x" * 513,
        "a\\b",
        "trailing/",
    ],
)
def test_path_tricks_in_document_ids_are_refused(rag: Shardrag, doc_id: str) -> None:
    with pytest.raises(InvalidDocumentId):
        rag.put_document("acme", doc_id, DOC)


def test_folder_paths_are_valid_document_ids(rag: Shardrag) -> None:
    rag.put_document("acme", "guides/ops/handbook.md", DOC)
    assert rag.get_document("acme", "guides/ops/handbook.md").version == 1


@pytest.mark.parametrize("tenant", ["", "UPPER", "-lead", "a b", "../x", "é", "x" * 64])
def test_invalid_tenant_ids_are_refused(rag: Shardrag, tenant: str) -> None:
    with pytest.raises(InvalidTenantId):
        rag.put_document(tenant, "doc", DOC)


@pytest.mark.parametrize(
    "metadata",
    [
        {"when": datetime(2026, 1, 1)},
        {"": 1},
        {"a.b": 1},
        {"big": "x" * 70_000},
    ],
)
def test_bad_metadata_is_refused_before_anything_is_written(rag: Shardrag, metadata: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidParameter):
        rag.put_document("acme", "doc", DOC, metadata=metadata)
    with pytest.raises(TenantNotFound):
        rag.get_document("acme", "doc")


def test_bad_search_parameters(rag: Shardrag) -> None:
    rag.put_document("acme", "doc", DOC)
    with pytest.raises(EmptyQuery):
        rag.search("acme", "   ")
    for k in (0, -1, 10_001):
        with pytest.raises(InvalidParameter):
            rag.search("acme", "replica", k=k)
    with pytest.raises(InvalidParameter):
        rag.search("acme", "replica", mode="fuzzy")
    with pytest.raises(InvalidParameter):
        rag.search("acme", "replica", filters={"a": {"b": 1}})
    with pytest.raises(InvalidParameter):
        rag.search("acme", "x" * 5000)


@pytest.mark.parametrize(
    "metadata",
    [{"team lead": "x"}, {"a:b": 1}, {"n": 2**63}, {"deep": {"n": [-(2**63) - 1]}}],
    ids=["space-in-key", "colon-in-key", "int-over-64-bits", "nested-int-under-64-bits"],
)
def test_metadata_the_engine_cannot_index_or_filter_is_refused(
    rag: Shardrag, metadata: dict[str, Any]
) -> None:
    with pytest.raises(InvalidParameter):
        rag.put_document("acme", "m.txt", b"text", metadata=metadata)
    rag.put_document("acme", "ok.txt", b"text about otters")
    with pytest.raises(InvalidParameter):
        rag.search("acme", "otters", filters=metadata)
