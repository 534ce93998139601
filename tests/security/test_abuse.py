"""Abuse that needs the served app's own settings and records: guessing keys, scraping
metrics for tenant names, unaccounted refusals, a LangChain store deleting past its groups.
These run on an app of their own in this process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shardrag import Shardrag
from shardrag.api import create_app
from shardrag.errors import TenantOverloaded
from shardrag.integrations.langchain import ShardragVectorStore
from shardrag.registry import Role
from tests.api.conftest import ROOT_KEY, ApiUnderTest, bearer, open_api
from tests.support import served, wait_until

pytestmark = pytest.mark.in_process(reason="sets the served app's own limits")


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[ApiUnderTest]:
    """An app that limits failed authentications (3 at once, then 1 a second) and requests
    per key (2 at once)."""
    under_test = open_api(
        tmp_path / "data",
        auth_failures_per_second=1,
        auth_failures_burst=3,
        rate_limit_per_second=0.5,
        rate_limit_burst=2,
    )
    try:
        yield under_test
    finally:
        under_test.client.close()
        under_test.rag.close()


def test_guessing_keys_is_rate_limited_per_address(guarded: ApiUnderTest) -> None:
    for _ in range(3):
        guess = guarded.client.get("/v1/whoami", headers=bearer("srk_0123_guess"))
        assert guess.status_code == 401, guess.text
    limited = guarded.client.get("/v1/whoami", headers=bearer("srk_0123_guess"))
    assert limited.status_code == 429, limited.text
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    # While the address is limited, no key is checked: a right guess learns nothing either.
    assert guarded.client.get("/v1/whoami", headers=bearer(ROOT_KEY)).status_code == 429


def test_a_repeated_authorization_header_is_refused(guarded: ApiUnderTest) -> None:
    headers = [("Authorization", f"Bearer {ROOT_KEY}"), ("Authorization", "Bearer other")]
    assert guarded.client.get("/v1/whoami", headers=headers).status_code == 401
    assert guarded.client.get("/v1/whoami", headers=bearer(ROOT_KEY)).status_code == 200


def test_a_rate_limited_request_is_logged_with_its_key(
    guarded: ApiUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    guarded.rag.create_tenant("limited")
    record, key = guarded.app.state.service.keys.issue("limited", Role.READER)
    caplog.set_level(logging.INFO, logger="shardrag")
    statuses = [guarded.client.get("/v1/whoami", headers=bearer(key)).status_code for _ in range(4)]
    assert 429 in statuses, statuses
    lines = [r for r in caplog.records if r.name == "shardrag.access" and r.status == 429]  # type: ignore[attr-defined]
    assert lines
    assert all(line.key_id == record.key_id for line in lines)  # type: ignore[attr-defined]


@pytest.mark.parametrize("names", [False, True])
def test_metrics_name_tenants_only_when_told(tmp_path: Path, names: bool) -> None:
    under_test = open_api(
        tmp_path / "data", tenant_max_concurrent_queries=1, metrics_tenant_names=names
    )
    try:
        admission = under_test.app.state.query_admission
        ticket = admission.admit("secret-merger-target")
        with pytest.raises(TenantOverloaded):
            admission.admit("secret-merger-target")
        admission.release(ticket)
        body = under_test.client.get("/metrics").text
        assert ("secret-merger-target" in body) is names
        counted = 'tenant="secret-merger-target"' if names else 'tenant="*"'
        assert f"shardrag_tenant_overloaded_total{{{counted}}} 1.0" in body
    finally:
        under_test.client.close()
        under_test.rag.close()


def test_a_langchain_store_with_groups_deletes_only_what_they_read(
    guarded: ApiUnderTest,
) -> None:
    rag = guarded.rag
    rag.put_document("lc", "legal/a.txt", b"A legal text.", "a.txt", acl=["legal"])
    ShardragVectorStore(rag, "lc", groups=["hr"], acl=["hr"]).delete(["legal/a.txt"])
    assert rag.get_document("lc", "legal/a.txt").state.value == "live"
    ShardragVectorStore(rag, "lc", groups=["legal"], acl=["legal"]).delete(["legal/a.txt"])
    assert rag.get_document("lc", "legal/a.txt").state.value == "deleted"


def test_large_embeddings_take_no_query_slot_and_queue_behind_their_own_tenant(
    tmp_path: Path,
) -> None:
    """A tenant's /embeddings calls of 128 texts of 4,000 characters hold its model budget,
    not query slots: its own searches and another tenant's answer 200 while they run (counted
    as queries, they took the tenant's slots and their seconds made every search look late,
    503), and its further calls wait behind them or hear 429."""
    rag = Shardrag.open(
        tmp_path / "data",
        shards=1,
        admin_key=ROOT_KEY,
        rate_limit_per_second=0,
        tenant_max_concurrent_queries=1,
        tenant_max_model_tokens=40_000,
    )
    try:
        app = create_app(rag)
        keys = app.state.service.keys
        rag.put_document("heavy", "shards.txt", b"Every shard is replicated to two nodes.")
        rag.put_document("light", "shards.txt", b"Every shard is replicated to two nodes.")
        heavy = bearer(keys.issue("heavy", Role.READER)[1])
        light = bearer(keys.issue("light", Role.READER)[1])
        texts = [f"{i} " + "long passage words " * 210 for i in range(128)]
        heavy_statuses: list[int] = []
        searched: list[int] = []
        with served(app) as url, httpx.Client(base_url=url, timeout=120) as client:

            def embed() -> None:
                sent = client.post(
                    "/v1/tenants/heavy/embeddings", json={"texts": texts}, headers=heavy
                )
                heavy_statuses.append(sent.status_code)

            callers = [threading.Thread(target=embed) for _ in range(3)]
            for thread in callers:
                thread.start()
            budget = app.state.model_budget
            assert wait_until(lambda: budget.in_flight("heavy") > 0, 30)
            for i, (tenant, key) in enumerate([("heavy", heavy), ("light", light)] * 3):
                found = client.post(
                    f"/v1/tenants/{tenant}/search",
                    json={"query": f"how are shards replicated {i}"},
                    headers=key,
                )
                searched.append(found.status_code)
            for thread in callers:
                thread.join()
        assert set(searched) == {200}, searched
        assert set(heavy_statuses) <= {200, 429} and 200 in heavy_statuses, heavy_statuses
    finally:
        rag.close()
