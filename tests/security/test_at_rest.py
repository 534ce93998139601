"""With a master key, no store shardrag writes holds a document's text, file name, title or
metadata values — before and after its tenant is dropped — and a dropped tenant's key is gone.

In this process: the data dir of a served app of its own. Against a cluster (whose api suite
runs with a master key, ``cluster/test_api_suite.py``): every file under the cluster's
directory (NATS' streams, each node's and worker's data dir, the blob store), its PostgreSQL
database and its Redis entries. Each scan also looks for the document's id, which stores keep
in the clear: finding it proves the scan saw where the document went.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from shardrag.cluster.launcher import ClusterState
from tests.api.conftest import CLUSTER_DIR, ApiUnderTest, open_api

MASTER = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
TEXT = "The Xylocarpous okapi ledger balances at dawn, said the Quillwort archivist."
SECRETS = ("Xylocarpous", "Quillwort", "quaggafile", "Okapiproject", "Marmosettitle")


def _files(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield str(path.relative_to(root)), path.read_bytes()


def _postgres(url: str) -> Iterator[tuple[str, bytes]]:
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
        for (table,) in tables:
            rows = conn.execute(f'SELECT t::text FROM "{table}" t').fetchall()
            yield f"postgres:{table}", "\n".join(r[0] for r in rows).encode()


def _redis(url: str, prefix: str) -> Iterator[tuple[str, bytes]]:
    client = redis.Redis.from_url(url)
    try:
        for name in client.scan_iter(match=f"{prefix}:*"):
            kind = client.type(name)
            value = client.get(name) if kind == b"string" else str(client.hgetall(name)).encode()
            yield f"redis:{name!r}", bytes(name) + b" " + (value or b"")
    finally:
        client.close()


def _stores(api: ApiUnderTest, own_dir: Path) -> list[tuple[str, bytes]]:
    if CLUSTER_DIR is None:
        return list(_files(own_dir))
    state = ClusterState.load(Path(CLUSTER_DIR))
    return [
        *_files(state.dir),
        *_postgres(state.registry_url),
        *_redis(state.redis_url, state.cache_prefix),
    ]


def _leaks(stores: list[tuple[str, bytes]]) -> list[str]:
    return [
        f"{word} in {where}" for where, raw in stores for word in SECRETS if word.encode() in raw
    ]


def test_no_store_holds_a_documents_text_before_or_after_its_tenant_is_dropped(
    cluster_api: ApiUnderTest | None, tmp_path: Path
) -> None:
    # In this process an app of its own, with a master key; else the cluster's (which has one).
    own = open_api(tmp_path / "data", master_key=MASTER) if cluster_api is None else None
    api = own or cluster_api
    assert api is not None
    try:
        tenant = f"at-rest-{secrets.token_hex(3)}"
        doc_id = f"ledgers/okapi-{secrets.token_hex(4)}.txt"
        keys = api.tenant(tenant)
        put = api.client.put(
            f"/v1/tenants/{tenant}/documents/{doc_id}",
            content=TEXT.encode(),
            params={
                "wait": "true",
                "filename": "quaggafile.txt",
                "title": "Marmosettitle",
                "metadata": '{"project": "Okapiproject"}',
            },
            headers={**keys["writer"], "Content-Type": "text/plain"},
        )
        assert put.status_code == 200, put.text
        for body in (
            {"query": "Xylocarpous okapi ledger"},
            {"query": "okapi ledger", "filters": {"project": "Okapiproject"}, "mode": "keyword"},
        ):
            found = api.client.post(
                f"/v1/tenants/{tenant}/search", json=body, headers=keys["reader"]
            )
            assert found.status_code == 200, found.text
            assert [h["doc_id"] for h in found.json()["hits"]] == [doc_id], body
            assert "Xylocarpous" in found.json()["hits"][0]["text"]
            assert found.json()["hits"][0]["metadata"] == {"project": "Okapiproject"}
        asked = api.client.post(
            f"/v1/tenants/{tenant}/answer",
            json={"question": "When does the Xylocarpous ledger balance?"},
            headers=keys["reader"],
        )
        assert asked.status_code == 200, asked.text
        if own is not None:
            own.rag.optimize()  # segments on disk, not only the engine's WAL

        stores = _stores(api, tmp_path / "data")
        assert any(doc_id.encode() in raw for _, raw in stores), "the scan missed the document"
        assert _leaks(stores) == []

        dropped = api.client.delete(f"/v1/tenants/{tenant}", headers=api.root)
        assert dropped.status_code == 200, dropped.text
        assert _leaks(_stores(api, tmp_path / "data")) == []
        if own is not None:
            assert tenant not in own.rag.registry.wrapped_keys()
    finally:
        if own is not None:
            own.client.close()
            own.rag.close()


@pytest.fixture
def cluster_api(request: pytest.FixtureRequest) -> ApiUnderTest | None:
    """The ``api`` fixture against a cluster; None in this process."""
    if CLUSTER_DIR is None:
        return None
    found: ApiUnderTest = request.getfixturevalue("api")
    return found
