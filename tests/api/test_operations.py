"""Operations: health, readiness, metrics, rate limits, and faults answered with a trace id."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.api.conftest import ApiUnderTest, open_api

from shardrag.embed.runtime import choose_runtime


def test_health_and_readiness_need_no_key(api: ApiUnderTest) -> None:
    assert api.client.get("/healthz").json()["status"] == "ok"
    ready = api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_openapi_documents_every_route(api: ApiUnderTest) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert {
        "/v1/tenants",
        "/v1/tenants/{t}/keys",
        "/v1/tenants/{t}/documents/{doc_id}",
        "/v1/tenants/{t}/search",
        "/v1/tenants/{t}/answer",
        "/v1/tenants/{t}/audit",
    } <= set(paths)
    assert api.client.get("/docs").status_code == 200


def test_the_docs_page_works_offline_and_documents_auth_and_errors(api: ApiUnderTest) -> None:
    page = api.client.get("/docs").text
    assert "cdn" not in page.lower()
    scripts = re.findall(r'src="([^"]+)"', page) + re.findall(r'href="([^"]+\.css)"', page)
    assert scripts and all(s.startswith("/docs-assets/") for s in scripts)
    for asset in scripts:
        fetched = api.client.get(asset)
        assert fetched.status_code == 200 and len(fetched.content) > 1000, asset
    spec = api.client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    search = spec["paths"]["/v1/tenants/{t}/search"]["post"]
    assert search["security"] == [{"bearer": []}]
    error_ref = "#/components/schemas/ErrorOut"
    for status in ("401", "404", "422", "429", "503"):
        body = search["responses"][status]["content"]["application/json"]["schema"]
        assert body["$ref"] == error_ref, (status, body)
    assert "security" not in spec["paths"]["/healthz"]["get"]


def _sample(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", metrics, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_latency_per_route_cache_hits_and_documents_by_state(
    api: ApiUnderTest,
) -> None:
    keys = api.tenant("metered")
    api.client.put(
        "/v1/tenants/metered/documents/m.txt?wait=true",
        content=b"Metrics are scraped every fifteen seconds.",
        headers=keys["writer"],
    )
    before = api.client.get("/metrics").text
    for _ in range(3):
        api.client.post(
            "/v1/tenants/metered/search", json={"query": "scrape interval"}, headers=keys["reader"]
        )
    after = api.client.get("/metrics").text
    assert "# TYPE shardrag_http_request_duration_seconds histogram" in after
    route = {"route": "/v1/tenants/{t}/search", "method": "POST", "status": "200"}
    count = "shardrag_http_request_duration_seconds_count"
    assert _sample(after, count, **route) - _sample(before, count, **route) == 3
    hits = "shardrag_cache_hits_total"
    assert _sample(after, hits, kind="search") - _sample(before, hits, kind="search") == 2
    assert _sample(after, "shardrag_cache_misses_total", kind="search") >= 1
    assert _sample(after, "shardrag_documents", state="live") >= 1
    # Which runtime embeds in this process, as the embedder itself reports it.
    runtime = choose_runtime("auto")
    model = "sentence-transformers/all-MiniLM-L6-v2"
    assert _sample(after, "shardrag_embedder_info", model=model, runtime=runtime) == 1


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(tmp_path: Path) -> None:
    limited = open_api(tmp_path / "data", rate_limit_per_second=0.5, rate_limit_burst=5)
    try:
        keys = limited.tenant("busy")
        other = limited.key("busy", "reader")
        # The root key spent its burst of 5 on the tenant and its keys; the reader has its own.
        answers = [limited.client.get("/v1/whoami", headers=keys["reader"]) for _ in range(7)]
        codes = [a.status_code for a in answers]
        assert codes[:5] == [200] * 5 and 429 in codes
        refused = answers[codes.index(429)]
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        # The limit is per key: another key of the same tenant is not held back.
        assert (
            limited.client.get("/v1/whoami", headers={"Authorization": f"Bearer {other}"})
        ).status_code == 200
    finally:
        limited.rag.close()


@pytest.mark.in_process(
    reason="it breaks api.rag.search by monkeypatching; the api processes of a cluster "
    "are other processes"
)
def test_a_fault_is_500_with_a_trace_id_and_the_server_goes_on(
    api: ApiUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = api.tenant("faulty")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(api.rag, "search", broken)
    answer = api.client.post(
        "/v1/tenants/faulty/search", json={"query": "anything"}, headers=keys["reader"]
    )
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["code"] == "internal_error" and "disk on fire" not in answer.text
    assert error["details"]["trace_id"] == answer.headers["X-Trace-Id"]
    monkeypatch.undo()
    assert api.client.get("/healthz").status_code == 200


def test_unknown_routes_and_methods_answer_in_the_error_shape(api: ApiUnderTest) -> None:
    missing = api.client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "route_not_found"
    keys = api.tenant("methods")
    wrong = api.client.patch("/v1/tenants/methods/search", headers=keys["reader"])
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
