"""The registry contract: every implementation (SQLite, PostgreSQL) behaves as specified here.

Each contract test runs once per backend; the PostgreSQL ones at the end cover what only a
shared database has to get right: migrations, concurrent writers, an unreachable server.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from functools import partial
from pathlib import Path

import psycopg
import pytest
from tests.support import POSTGRES_URL, postgres_database, postgres_is_up, require

from shardrag.errors import (
    DocumentNotFound,
    InvalidParameter,
    NotFound,
    TenantExists,
    Unavailable,
)
from shardrag.models import VersionState
from shardrag.registry import (
    AuditEvent,
    KeyRecord,
    ManifestEntry,
    NewVersion,
    PendingVersion,
    PostgresRegistry,
    Registry,
    Role,
    StoredResponse,
)
from shardrag.registry.postgres import SCHEMA_VERSION
from shardrag.registry.sqlite import SqliteRegistry

Opener = Callable[[], Registry]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    require(postgres_is_up(), f"no PostgreSQL server answers at {POSTGRES_URL}")
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens registries on one fresh store of the backend under test; closes them all after."""
    if request.param == "sqlite":
        make: Opener = partial(SqliteRegistry, tmp_path / "registry.sqlite3")
    else:
        make = partial(PostgresRegistry, request.getfixturevalue("postgres_url"))
    with ExitStack() as opened:

        def open_one() -> Registry:
            return opened.enter_context(closing(make()))

        yield open_one


@pytest.fixture
def registry(open_store: Opener) -> Registry:
    """A registry with one tenant, ``acme``, on shard 0."""
    r = open_store()
    r.ensure_tenant("acme", 0)
    return r


def new(digest: str = "h1", **meta: object) -> NewVersion:
    return NewVersion(digest, "doc.md", 10, dict(meta))


def generation(registry: Registry, tenant: str = "acme") -> int:
    record = registry.get_tenant(tenant)
    assert record is not None
    return record.generation


def state_of(registry: Registry, doc_id: str, version: int) -> VersionState:
    info = registry.version("acme", doc_id, version)
    assert info is not None
    return info.state


# -- tenants ----------------------------------------------------------------------------------


def test_tenant_placement_is_recorded_once(registry: Registry) -> None:
    first = registry.get_tenant("acme")
    assert first is not None and first.name == "acme" and first.created_at > 0
    assert registry.ensure_tenant("acme", 5, "Other") == first  # the first placement sticks
    assert [t.tenant for t in registry.list_tenants()] == ["acme"]
    assert registry.get_tenant("nobody") is None


def test_creating_a_taken_tenant_id_is_refused(registry: Registry) -> None:
    created = registry.create_tenant("globex", 3, "Globex Corp")
    assert (created.tenant, created.shard_id, created.name, created.generation) == (
        "globex",
        3,
        "Globex Corp",
        0,
    )
    with pytest.raises(TenantExists):
        registry.create_tenant("globex", 1, "Impostor")
    assert registry.get_tenant("globex") == created


def test_tenants_are_listed_by_id_byte_wise(registry: Registry) -> None:
    for tenant in ("ab", "a_b", "a-b", "a0", "b"):
        registry.ensure_tenant(tenant, 0)
    assert [t.tenant for t in registry.list_tenants()] == ["a-b", "a0", "a_b", "ab", "acme", "b"]


def test_deleting_a_tenant_forgets_its_documents_keys_and_responses(registry: Registry) -> None:
    registry.ensure_tenant("globex", 1)
    for tenant in ("acme", "globex"):
        registry.begin_version(tenant, "doc", new())
        registry.record_manifest(tenant, "doc", 1, [ManifestEntry(0, "x", 3)])
        registry.add_key(KeyRecord(f"k-{tenant}", tenant, Role.ADMIN, "sha", None, 1.0))
        registry.store_response(tenant, "idem", StoredResponse("req", 200, {}, 1.0))
    registry.delete_tenant("acme")
    assert registry.get_tenant("acme") is None
    assert registry.document("acme", "doc") is None
    assert registry.version("acme", "doc", 1) is None
    assert registry.manifest("acme", "doc", 1) == []
    assert registry.key("k-acme") is None
    assert registry.stored_response("acme", "idem") is None
    assert registry.pending_versions() == registry.pending_versions("globex")
    assert registry.document("globex", "doc") is not None
    assert registry.key("k-globex") is not None


# -- versions ---------------------------------------------------------------------------------


def test_versions_count_up_and_live_supersedes(registry: Registry) -> None:
    assert registry.begin_version("acme", "doc", new("h1")) == 1
    registry.mark_live("acme", "doc", 1)
    assert registry.begin_version("acme", "doc", new("h2")) == 2
    info = registry.document("acme", "doc")
    assert info is not None
    assert info.live is not None and info.live.version == 1
    assert info.latest.state is VersionState.PENDING
    before = generation(registry)
    registry.mark_live("acme", "doc", 2)
    info = registry.document("acme", "doc")
    assert info is not None and info.version == 2 and info.state is VersionState.LIVE
    assert state_of(registry, "doc", 1) is VersionState.SUPERSEDED
    assert generation(registry) == before + 1


def test_an_overtaken_version_never_becomes_live(registry: Registry) -> None:
    registry.begin_version("acme", "doc", new("h1"))
    registry.begin_version("acme", "doc", new("h2"))
    registry.mark_live("acme", "doc", 2)
    before = generation(registry)
    registry.mark_live("acme", "doc", 1)  # late
    info = registry.document("acme", "doc")
    assert info is not None and info.version == 2
    assert state_of(registry, "doc", 1) is VersionState.SUPERSEDED
    assert generation(registry) == before  # nothing visible changed


def test_a_lagging_replica_reporting_an_old_commit_after_a_delete_changes_nothing(
    registry: Registry,
) -> None:
    # Two replicas apply one shard log: the first already applied v2 and the tombstone v3;
    # the second, behind, reports v2's commit again afterwards.
    registry.begin_version("acme", "doc", new("h1"))
    registry.begin_version("acme", "doc", new("h2"))
    registry.mark_live("acme", "doc", 2)
    registry.begin_tombstone("acme", "doc")
    registry.mark_deleted("acme", "doc", 3)
    before = generation(registry)
    registry.mark_live("acme", "doc", 2)  # the lagging replica
    info = registry.document("acme", "doc")
    assert info is not None and info.state is VersionState.DELETED
    assert registry.documents("acme") == []
    assert generation(registry) == before


def test_failed_version_keeps_the_live_one_and_its_reason(registry: Registry) -> None:
    registry.begin_version("acme", "doc", new("h1"))
    registry.mark_live("acme", "doc", 1)
    registry.begin_version("acme", "doc", new("h2"))
    before = generation(registry)
    registry.mark_failed("acme", "doc", 2, "unparseable_document", "bad xref table")
    info = registry.document("acme", "doc")
    assert info is not None and info.state is VersionState.LIVE and info.version == 1
    assert (info.latest.error_code, info.latest.error) == ("unparseable_document", "bad xref table")
    assert generation(registry) == before


def test_only_a_pending_version_can_fail(registry: Registry) -> None:
    registry.begin_version("acme", "doc", new())
    registry.mark_live("acme", "doc", 1)
    registry.mark_failed("acme", "doc", 1, "internal_error", "too late")
    info = registry.version("acme", "doc", 1)
    assert info is not None and info.state is VersionState.LIVE and info.error is None


def test_tombstones_and_listing_by_state(registry: Registry) -> None:
    for doc in ("a", "b", "c"):
        registry.begin_version("acme", doc, new(doc))
        registry.mark_live("acme", doc, 1)
    registry.begin_tombstone("acme", "b")
    (pending,) = registry.pending_versions()
    assert pending == PendingVersion("acme", "b", 2, tombstone=True, created_at=pending.created_at)
    assert pending.created_at > 0
    before = generation(registry)
    registry.mark_deleted("acme", "b", 2)
    assert generation(registry) == before + 1
    deleted = registry.document("acme", "b")
    assert deleted is not None and deleted.live is None and deleted.state is VersionState.DELETED
    assert state_of(registry, "b", 1) is VersionState.SUPERSEDED
    assert [d.doc_id for d in registry.documents("acme")] == ["a", "c"]
    assert [d.doc_id for d in registry.documents("acme", VersionState.DELETED)] == ["b"]
    assert [d.doc_id for d in registry.documents("acme", limit=1, after="a")] == ["c"]
    with pytest.raises(DocumentNotFound):
        registry.begin_tombstone("acme", "never")


def test_listing_pages_by_id_and_filters_by_the_document_state(registry: Registry) -> None:
    registry.ensure_tenant("globex", 1)
    registry.begin_version("globex", "a-other", new())
    registry.begin_version("acme", "live-then-pending", new())
    registry.mark_live("acme", "live-then-pending", 1)
    registry.begin_version("acme", "live-then-pending", new("h2"))
    registry.begin_version("acme", "pending", new())
    registry.begin_version("acme", "failed", new())
    registry.mark_failed("acme", "failed", 1, "empty_document", "no text")
    for doc in ("d-0", "d-1", "d-2", "d-3"):
        registry.begin_version("acme", doc, new())
        registry.mark_live("acme", doc, 1)

    def ids(
        state: VersionState | None = None, limit: int = 100, after: str | None = None
    ) -> list[str]:
        return [d.doc_id for d in registry.documents("acme", state, limit, after)]

    assert ids() == ["d-0", "d-1", "d-2", "d-3", "failed", "live-then-pending", "pending"]
    assert ids(VersionState.LIVE) == ["d-0", "d-1", "d-2", "d-3", "live-then-pending"]
    assert ids(VersionState.PENDING) == ["pending"]
    assert ids(VersionState.FAILED) == ["failed"]
    assert ids(limit=2) == ["d-0", "d-1"]
    assert ids(limit=2, after="d-1") == ["d-2", "d-3"]
    assert ids(VersionState.LIVE, limit=2, after="d-3") == ["live-then-pending"]
    (listed,) = registry.documents("acme", VersionState.LIVE, after="d-3")
    assert listed == registry.document("acme", "live-then-pending")
    assert listed.live is not None and listed.live.version == 1 and listed.latest.version == 2


def test_pending_versions_are_oldest_first_and_filter_by_tenant(registry: Registry) -> None:
    registry.ensure_tenant("globex", 1)
    registry.begin_version("acme", "z", new())
    registry.begin_version("globex", "m", new())
    registry.begin_version("acme", "a", new())
    registry.begin_version("acme", "done", new())
    registry.mark_live("acme", "done", 1)
    registry.begin_tombstone("acme", "done")
    everything = registry.pending_versions()
    assert [(p.tenant, p.doc_id, p.version, p.tombstone) for p in everything] == [
        ("acme", "z", 1, False),
        ("globex", "m", 1, False),
        ("acme", "a", 1, False),
        ("acme", "done", 2, True),
    ]
    assert [p.created_at for p in everything] == sorted(p.created_at for p in everything)
    assert [p.doc_id for p in registry.pending_versions("acme")] == ["z", "a", "done"]
    assert registry.pending_versions("nobody") == []


def test_manifests_round_trip(registry: Registry) -> None:
    registry.begin_version("acme", "doc", new())
    registry.record_manifest("acme", "doc", 1, [ManifestEntry(1, "old", 1)])
    entries = [ManifestEntry(1, "y", 30), ManifestEntry(0, "x", 12)]
    registry.record_manifest("acme", "doc", 1, entries, reused=1, embedded=1)
    assert registry.manifest("acme", "doc", 1) == [entries[1], entries[0]]
    assert registry.manifest("acme", "doc", 2) == []
    info = registry.document("acme", "doc")
    assert info is not None and info.latest.chunk_count == 2
    assert (info.latest.reused_vectors, info.latest.embedded_chunks) == (1, 1)


def test_a_version_records_what_it_was_begun_with(registry: Registry) -> None:
    before = time.time()
    begun = NewVersion("sha", "report.pdf", 1234, {"team": "ops", "n": 3}, "application/pdf", "Q3")
    registry.begin_version("acme", "doc", begun)
    registry.record_commit("acme", "doc", 1, 42)
    info = registry.version("acme", "doc", 1)
    assert info is not None
    assert (info.version, info.state, info.content_hash, info.filename, info.size) == (
        1,
        VersionState.PENDING,
        "sha",
        "report.pdf",
        1234,
    )
    assert (info.metadata, info.content_type, info.title) == (
        begun.metadata,
        "application/pdf",
        "Q3",
    )
    assert (info.commit_position, info.chunk_count, info.error_code) == (42, 0, None)
    assert before <= info.created_at <= info.updated_at <= time.time()
    assert registry.version("acme", "doc", 2) is None
    assert registry.version("acme", "other", 1) is None


def test_only_pending_or_failed_versions_are_superseded(registry: Registry) -> None:
    for doc in ("pending", "failed", "live"):
        registry.begin_version("acme", doc, new())
    registry.mark_failed("acme", "failed", 1, "internal_error", "boom")
    registry.mark_live("acme", "live", 1)
    for doc in ("pending", "failed", "live"):
        registry.mark_superseded("acme", doc, 1)
    assert state_of(registry, "pending", 1) is VersionState.SUPERSEDED
    assert state_of(registry, "failed", 1) is VersionState.SUPERSEDED
    assert state_of(registry, "live", 1) is VersionState.LIVE


def test_reopening_makes_a_failed_version_pending_again(registry: Registry) -> None:
    registry.begin_version("acme", "doc", new())
    registry.mark_failed("acme", "doc", 1, "embedder_unavailable", "timed out")
    assert registry.pending_versions() == []
    assert registry.reopen("acme", "doc", 1) is True
    info = registry.version("acme", "doc", 1)
    assert info is not None and info.state is VersionState.PENDING
    assert (info.error_code, info.error) == (None, None)
    assert [p.doc_id for p in registry.pending_versions()] == ["doc"]
    assert registry.reopen("acme", "doc", 1) is False  # pending, not failed
    registry.mark_live("acme", "doc", 1)
    assert registry.reopen("acme", "doc", 1) is False
    assert registry.reopen("acme", "never", 1) is False


def test_document_counts_cover_every_tenant_and_state(registry: Registry) -> None:
    assert registry.document_counts() == dict.fromkeys(VersionState, 0)
    registry.ensure_tenant("globex", 1)
    registry.begin_version("globex", "live", new())
    registry.mark_live("globex", "live", 1)
    registry.begin_version("acme", "live", new())
    registry.mark_live("acme", "live", 1)
    registry.begin_version("acme", "live", new("h2"))  # still counted as live
    registry.begin_version("acme", "pending", new())
    registry.begin_version("acme", "failed", new())
    registry.mark_failed("acme", "failed", 1, "empty_document", "no text")
    registry.begin_version("acme", "superseded", new())
    registry.mark_superseded("acme", "superseded", 1)
    registry.begin_version("acme", "deleted", new())
    registry.mark_live("acme", "deleted", 1)
    registry.begin_tombstone("acme", "deleted")
    registry.mark_deleted("acme", "deleted", 2)
    assert registry.document_counts() == {
        VersionState.LIVE: 2,
        VersionState.PENDING: 1,
        VersionState.FAILED: 1,
        VersionState.SUPERSEDED: 1,
        VersionState.DELETED: 1,
    }


def test_finishing_a_version_of_a_dropped_tenant_changes_nothing(registry: Registry) -> None:
    registry.begin_version("acme", "doc", new())
    registry.delete_tenant("acme")
    registry.mark_live("acme", "doc", 1)
    registry.mark_deleted("acme", "doc", 1)
    assert registry.get_tenant("acme") is None
    assert registry.document("acme", "doc") is None


# -- access: keys, audit, idempotency ---------------------------------------------------------


def key(key_id: str, tenant: str | None, created_at: float, role: Role = Role.READER) -> KeyRecord:
    return KeyRecord(key_id, tenant, role, f"sha-{key_id}", f"name-{key_id}", created_at)


def test_keys_are_listed_per_tenant_oldest_first(registry: Registry) -> None:
    registry.ensure_tenant("globex", 1)
    stored = [
        key("k3", "acme", 3.0, Role.ADMIN),
        key("k1", "acme", 1.0, Role.WRITER),
        key("k2", "acme", 1.0),
        key("g1", "globex", 0.5),
        key("root", None, 2.0, Role.ROOT),
    ]
    for record in stored:
        registry.add_key(record)
    assert registry.key("k3") == stored[0]
    assert registry.key("missing") is None
    assert [k.key_id for k in registry.keys("acme")] == ["k1", "k2", "k3"]
    assert registry.keys("globex") == [stored[3]]
    assert registry.keys(None) == [stored[4]]
    assert registry.keys("nobody") == []


def test_revoking_a_key_keeps_the_first_revocation_time(registry: Registry) -> None:
    registry.add_key(key("k1", "acme", 1.0))
    first = registry.revoke_key("k1")
    assert first.revoked_at is not None and first.revoked_at >= 1.0
    assert registry.revoke_key("k1") == first
    assert registry.key("k1") == first
    with pytest.raises(NotFound):
        registry.revoke_key("missing")


def test_audit_is_newest_first_per_tenant_and_pages_by_id(registry: Registry) -> None:
    registry.ensure_tenant("globex", 1)
    for n in range(5):
        for tenant in ("acme", "globex"):
            registry.append_audit(
                AuditEvent(tenant, "key:k1", "ingest", f"doc-{n}", "ok", 100.0 + n, {"n": n})
            )
    registry.append_audit(AuditEvent(None, "root", "create_tenant", "acme", "ok", 200.0, {}))
    events = registry.audit("acme")
    assert [e.target for e in events] == ["doc-4", "doc-3", "doc-2", "doc-1", "doc-0"]
    assert [e.event_id for e in events] == sorted((e.event_id for e in events), reverse=True)
    newest = events[0]
    assert (newest.tenant, newest.actor, newest.action, newest.outcome) == (
        "acme",
        "key:k1",
        "ingest",
        "ok",
    )
    assert (newest.at, newest.details) == (104.0, {"n": 4})
    page = registry.audit("acme", limit=2)
    assert page == events[:2]
    assert registry.audit("acme", limit=2, before=page[-1].event_id) == events[2:4]
    assert registry.audit("acme", before=events[-1].event_id) == []
    assert registry.audit("nobody") == []


def test_the_first_stored_response_wins(registry: Registry) -> None:
    registry.ensure_tenant("globex", 1)
    first = StoredResponse("req-1", 202, {"doc_id": "a", "version": 1, "nested": [1, 2]}, 5.0)
    assert registry.stored_response("acme", "idem") is None
    registry.store_response("acme", "idem", first)
    registry.store_response("acme", "idem", StoredResponse("req-2", 500, {}, 6.0))
    assert registry.stored_response("acme", "idem") == first
    assert registry.stored_response("globex", "idem") is None


# -- durability -------------------------------------------------------------------------------


def test_state_survives_reopening(open_store: Opener) -> None:
    first = open_store()
    first.ensure_tenant("acme", 1)
    first.begin_version("acme", "doc", new(team="ops"))
    first.mark_live("acme", "doc", 1)
    first.add_key(key("k1", "acme", 1.0))
    first.close()
    again = open_store()
    info = again.document("acme", "doc")
    assert info is not None and info.metadata == {"team": "ops"} and info.version == 1
    assert again.get_tenant("acme") is not None and again.key("k1") is not None


def test_an_old_sqlite_file_gains_the_columns_added_since(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    SqliteRegistry(path).close()
    with closing(sqlite3.connect(path)) as db:
        db.execute("ALTER TABLE tenants DROP COLUMN name")
        for column in ("content_type", "title", "commit_position", "reused_vectors"):
            db.execute(f"ALTER TABLE versions DROP COLUMN {column}")
        db.commit()
    with closing(SqliteRegistry(path)) as registry:
        registry.ensure_tenant("acme", 0, "Acme")
        registry.begin_version("acme", "doc", NewVersion("h", None, 1, {}, "text/plain", "T"))
        registry.record_commit("acme", "doc", 1, 7)
        info = registry.version("acme", "doc", 1)
        assert info is not None and (info.title, info.commit_position) == ("T", 7)
        assert registry.get_tenant("acme").name == "Acme"  # type: ignore[union-attr]


# -- PostgreSQL: what a database shared by many processes must get right -----------------------


def applied_migrations(url: str) -> list[tuple[int, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version"
        ).fetchall()
    return [(int(v), int(n)) for v, n in rows]


def test_postgres_migrations_run_once_when_processes_open_together(postgres_url: str) -> None:
    start = threading.Barrier(3)

    def open_and_close(_: int) -> None:
        start.wait()
        PostgresRegistry(postgres_url).close()

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(open_and_close, range(3)))
    PostgresRegistry(postgres_url).close()  # opening a migrated database changes nothing
    assert applied_migrations(postgres_url) == [(v, 1) for v in range(1, SCHEMA_VERSION + 1)]


def test_postgres_refuses_a_schema_newer_than_it_knows(postgres_url: str) -> None:
    PostgresRegistry(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (%s, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(Unavailable, match="newer") as raised:
        PostgresRegistry(postgres_url)
    assert raised.value.details["schema_version"] == SCHEMA_VERSION + 1


def test_postgres_concurrent_writers_get_distinct_consecutive_versions(postgres_url: str) -> None:
    with closing(PostgresRegistry(postgres_url)) as registry:
        registry.ensure_tenant("acme", 0)

        def begin_ten(_: int) -> list[int]:
            return [registry.begin_version("acme", "doc", new()) for _ in range(10)]

        with ThreadPoolExecutor(8) as pool:
            numbers = [n for batch in pool.map(begin_ten, range(8)) for n in batch]
        assert sorted(numbers) == list(range(1, 81))
        info = registry.document("acme", "doc")
        assert info is not None and info.latest.version == 80


def test_postgres_one_of_concurrent_creators_gets_the_tenant(postgres_url: str) -> None:
    with closing(PostgresRegistry(postgres_url)) as registry:

        def create(n: int) -> str:
            try:
                return registry.create_tenant("acme", n, f"creator {n}").name
            except TenantExists:
                return ""

        with ThreadPoolExecutor(8) as pool:
            names = [name for name in pool.map(create, range(8)) if name]
        assert len(names) == 1
        assert registry.ensure_tenant("acme", 99).name == names[0]


def test_postgres_concurrent_go_lives_never_lose_a_generation_bump(postgres_url: str) -> None:
    with closing(PostgresRegistry(postgres_url)) as registry:
        registry.ensure_tenant("acme", 0)

        def publish(worker: int) -> None:
            for n in range(5):
                doc = f"doc-{worker}"
                version = registry.begin_version("acme", doc, new(f"h{n}"))
                registry.mark_live("acme", doc, version)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(publish, range(8)))
        assert generation(registry) == 40
        assert registry.document_counts()[VersionState.LIVE] == 8


def test_postgres_an_unreachable_server_is_unavailable_promptly() -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable, match="unavailable") as raised:
        PostgresRegistry("postgresql://127.0.0.1:1/shardrag?connect_timeout=2")
    assert time.monotonic() - started < 5
    assert raised.value.details["registry"] == "127.0.0.1:1/shardrag"


def test_postgres_losing_the_server_is_unavailable(postgres_url: str) -> None:
    with closing(PostgresRegistry(postgres_url, timeout=1)) as registry:
        registry.ensure_tenant("acme", 0)
        name = postgres_url.rsplit("/", 1)[1]
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        started = time.monotonic()
        with pytest.raises(Unavailable, match="unavailable"):
            registry.get_tenant("acme")
        assert time.monotonic() - started < 5


def test_postgres_a_nul_character_is_a_bad_parameter_and_the_audit_log_keeps_going(
    postgres_url: str,
) -> None:
    """PostgreSQL text and jsonb cannot hold U+0000 (SQLite can): a value with one is refused
    as InvalidParameter (a 422, not a fault), and an audit event, which records what a refused
    request named, keeps it as U+FFFD instead of failing."""
    with closing(PostgresRegistry(postgres_url)) as registry:
        registry.ensure_tenant("acme", 0)
        with pytest.raises(InvalidParameter, match="NUL"):
            registry.create_tenant("nul", 0, "a\x00b")
        with pytest.raises(InvalidParameter, match="NUL"):
            registry.key("a\x00b")
        with pytest.raises(InvalidParameter, match="NUL"):
            registry.begin_version("acme", "doc", new(team="a\x00b"))
        event = AuditEvent("acme", "key:k1", "document.delete", "a\x00b", "bad", 1.0, {})
        registry.append_audit(event)
        assert [e.target for e in registry.audit("acme")] == ["a\ufffdb"]


def test_a_keys_access_groups_are_kept(registry: Registry) -> None:
    registry.add_key(KeyRecord("g1", "acme", Role.READER, "h", None, 1.0, groups=("eng", "hr")))
    registry.add_key(KeyRecord("g2", "acme", Role.READER, "h", None, 2.0))
    assert registry.key("g1").groups == ("eng", "hr")  # type: ignore[union-attr]
    assert registry.key("g2").groups is None  # type: ignore[union-attr]
    assert [k.groups for k in registry.keys("acme")] == [("eng", "hr"), None]


def test_a_tenants_data_key_is_kept_once_and_dropped_with_it(registry: Registry) -> None:
    assert registry.data_key("acme") is None
    assert registry.add_data_key("acme", b"first") == b"first"
    assert registry.add_data_key("acme", b"second") == b"first"
    assert registry.data_key("acme") == b"first"
    registry.delete_tenant("acme")
    assert registry.data_key("acme") is None


def test_wrapped_keys_are_kept_once_listed_and_rewrapped_only_from_what_they_were(
    registry: Registry,
) -> None:
    registry.ensure_tenant("acme", 0)
    assert registry.add_data_key("acme", b"first") == b"first"
    assert registry.add_data_key("acme", b"second") == b"first"  # kept once
    assert registry.add_data_key("@snapshots", b"deployment") == b"deployment"
    assert registry.data_key("@snapshots") == b"deployment"
    assert registry.wrapped_keys() == {"acme": b"first", "@snapshots": b"deployment"}
    assert not registry.rewrap_key("acme", b"stale", b"new")
    assert registry.rewrap_key("acme", b"first", b"new")
    assert registry.rewrap_key("@snapshots", b"deployment", b"new deployment")
    assert registry.wrapped_keys() == {"acme": b"new", "@snapshots": b"new deployment"}
    registry.delete_tenant("acme")
    assert registry.wrapped_keys() == {"@snapshots": b"new deployment"}


def test_no_page_of_the_keys_table_keeps_a_dropped_tenants_wrapped_key(
    postgres_url: str,
) -> None:
    """A deleted row stays in its page until the page is written again: a copy of the
    database's files would give back the dropped tenant's wrapped key. The drop rewrites the
    table (SQLite: tests/blobs/test_encryption.py)."""
    import psycopg

    registry = PostgresRegistry(postgres_url)
    try:
        registry.ensure_tenant("acme", 0)
        registry.ensure_tenant("globex", 0)
        wrapped = b"wrapped-key-of-acme-" + bytes(range(32))
        registry.add_data_key("acme", wrapped)
        registry.add_data_key("globex", b"wrapped-key-of-globex")

        def table_file() -> bytes:
            with psycopg.connect(postgres_url) as conn:
                conn.execute("CHECKPOINT")  # the pages on disk, not only in shared buffers
                data_dir = conn.execute("SHOW data_directory").fetchone()
                relation = conn.execute("SELECT pg_relation_filepath('data_keys')").fetchone()
            assert data_dir is not None and relation is not None
            return (Path(data_dir[0]) / relation[0]).read_bytes()

        assert wrapped in table_file()
        registry.delete_tenant("acme")
        assert wrapped not in table_file()
        assert registry.data_key("globex") == b"wrapped-key-of-globex"
    finally:
        registry.close()
