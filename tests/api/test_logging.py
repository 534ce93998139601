"""Structured logs: JSON lines carrying the trace id of the request that logged them."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from tests.api.conftest import ApiUnderTest, bearer

from shardrag.observability import JsonFormatter


def test_a_log_record_is_one_json_line_with_its_extras() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "shardrag.api",
            logging.ERROR,
            __file__,
            1,
            "failed %s",
            ("x",),
            exc_info=sys.exc_info(),
        )
    record.trace_id = "abc123"
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == "failed x" and entry["level"] == "error"
    assert entry["trace_id"] == "abc123" and "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("Z")


@pytest.mark.in_process(reason="reads this process's log records")
def test_every_request_is_one_access_log_line_and_refusals_are_audited(
    api: ApiUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    keys = api.tenant("logged-corp")
    other = api.tenant("other-corp")
    caplog.set_level(logging.INFO, logger="shardrag")
    searched = api.client.post(
        "/v1/tenants/logged-corp/search",
        json={"query": "a secret question"},
        headers=keys["reader"],
    )
    assert searched.status_code == 200
    unknown = api.client.get("/v1/tenants/logged-corp/documents", headers=bearer("srk_x_y"))
    assert unknown.status_code == 401
    crossing = api.client.get("/v1/tenants/logged-corp/documents", headers=other["reader"])
    assert crossing.status_code == 404
    access = [r for r in caplog.records if r.name == "shardrag.access"]
    by_trace = {getattr(r, "trace_id", None): r for r in access}
    line = by_trace[searched.headers["X-Trace-Id"]]
    assert line.route == "/v1/tenants/{t}/search"  # type: ignore[attr-defined]
    assert line.status == 200 and line.tenant == "logged-corp"  # type: ignore[attr-defined]
    assert line.method == "POST" and line.bytes_in > 0 and line.bytes_out > 0  # type: ignore[attr-defined]
    assert line.key_id and line.duration_ms >= 0  # type: ignore[attr-defined]
    formatted = JsonFormatter().format(line)
    assert "secret question" not in formatted and "Bearer" not in formatted
    json.loads(formatted)
    assert by_trace[unknown.headers["X-Trace-Id"]].status == 401  # type: ignore[attr-defined]
    refusals = {
        getattr(r, "trace_id", None): r.reason  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "shardrag.audit"
    }
    assert refusals[unknown.headers["X-Trace-Id"]] == "unauthorized"
    assert refusals[crossing.headers["X-Trace-Id"]] == "other_tenant"
    audit = api.client.get("/v1/tenants/other-corp/audit", headers=other["admin"]).json()
    assert any(e["action"] == "access.refused" for e in audit["events"])
