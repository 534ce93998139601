"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis 4).

Every operation of the schema the app publishes gets up to 30 valid and 30 invalid requests
(schemathesis' positive and negative generation modes), derandomized so CI sees the same
requests every run. The tenant path parameter ``t`` is the real tenant 90 % of the time and
``doc_id`` names a real document half the time, so requests get past the guard into the
routes instead of stopping at 404. The one property: no request makes the server fail (5xx).

The operations are driven through ``operation.as_strategy()`` and hypothesis directly, one
subtest each: schemathesis' own pytest loader (``schemathesis.pytest.from_fixture``) fails
under pytest 9.2 (it sets ``Function._nodeid``, which pytest 9 no longer has).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode, HookContext
from tests.api.conftest import ApiUnderTest

TENANT = "fuzz"
DOOMED_TENANT = "fuzz-doomed"  # the only tenant a fuzzed DELETE /v1/tenants/{t} may remove
DOCS = {
    "guides/failover.md": b"# Failover\n\nShards fail over to replicas within seconds.",
    "notes/tides.txt": b"Tide tables for the northern harbour, printed every Monday.",
    "faq.html": b"<html><body><h1>FAQ</h1><p>Keys are rotated every 90 days.</p></body></html>",
}
MAX_EXAMPLES = 30  # per operation, key and generation mode
# Bytes of URL past which uvicorn's HTTP parser refuses a request before the app sees it
# (it accepts 100 000, refuses 150 000); only a request over a socket meets it.
REQUEST_HEAD_LIMIT = 100_000


@dataclass
class Fuzzed:
    """The keys and ids the fuzzed requests use."""

    writer: dict[str, str]
    admin: dict[str, str]
    spare_key_id: str
    #: Keys limited to the access group ``eng``: the narrower paths through every route.
    grouped_reader: dict[str, str]
    grouped_admin: dict[str, str]


@pytest.fixture(scope="module")
def fuzzed(api: ApiUnderTest) -> Fuzzed:
    keys = api.tenant(TENANT)
    api.tenant(DOOMED_TENANT)
    for doc_id, data in DOCS.items():
        put = api.client.put(
            f"/v1/tenants/{TENANT}/documents/{doc_id}",
            params={"wait": "true", "metadata": json.dumps({"team": "ops", "year": 2026})},
            content=data,
            headers=keys["writer"],
        )
        assert put.status_code == 200, put.text
    spare = api.client.post(
        f"/v1/tenants/{TENANT}/keys",
        json={"role": "reader", "name": "spare", "groups": ["eng"]},
        headers=api.root,
    )
    assert spare.status_code == 201, spare.text
    grouped = {}
    for role in ("reader", "admin"):
        made = api.client.post(
            f"/v1/tenants/{TENANT}/keys", json={"role": role, "groups": ["eng"]}, headers=api.root
        )
        assert made.status_code == 201, made.text
        grouped[role] = {"Authorization": f"Bearer {made.json()['key']}"}
    return Fuzzed(
        writer=keys["writer"],
        admin=keys["admin"],
        spare_key_id=spare.json()["id"],
        grouped_reader=grouped["reader"],
        grouped_admin=grouped["admin"],
    )


def _pinning(fuzz: Fuzzed, as_root: bool) -> Callable[[HookContext, dict[str, Any]], Any]:
    """A hook pointing most generated path parameters at things that exist.

    A flatmap hook sees plain values in both generation modes (schemathesis unwraps and
    rewraps the values of negative mode) and draws its own dice, so hypothesis still controls
    (and shrinks) the choice.
    """
    doc_ids = list(DOCS)

    def flatmap_path_parameters(context: HookContext, path_parameters: dict[str, Any]) -> Any:
        operation = context.operation
        target = (operation.method.upper(), operation.path) if operation else None
        deletes_tenant = as_root and target == ("DELETE", "/v1/tenants/{t}")

        if not path_parameters:
            return st.just(path_parameters)

        def pin(roll: int) -> dict[str, Any]:
            params = dict(path_parameters)
            if "t" in params and roll < 9:  # 90 %: the real tenant
                params["t"] = TENANT
            if deletes_tenant and params.get("t") == TENANT:
                params["t"] = DOOMED_TENANT  # never delete the tenant under test
            if "doc_id" in params and roll % 2 == 0:  # 50 %: a real document
                params["doc_id"] = doc_ids[roll % len(doc_ids)]
            if "key_id" in params and roll % 3 == 0:  # 33 %: a real (spare) key
                params["key_id"] = fuzz.spare_key_id
            return params

        return st.integers(0, 9).map(pin)

    return flatmap_path_parameters


def _schema(api: ApiUnderTest, fuzz: Fuzzed, as_root: bool = False) -> Any:
    # In-process: the app itself (ASGI). Against a cluster: its api processes over HTTP.
    if api.url is not None:
        schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    else:
        schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    schema.hook(_pinning(fuzz, as_root))
    return schema


@dataclass
class Outcome:
    """What one operation's fuzzing sent and got."""

    statuses: dict[int, int]
    pinned: int = 0
    invalid_impossible: bool = False  # the schema leaves nothing to get wrong (no parameters)

    def count(self, status: int, tenant: str | None) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.pinned += tenant in (TENANT, DOOMED_TENANT)


def _fuzz_operation(operation: Any, headers: dict[str, str]) -> Outcome:
    """Up to MAX_EXAMPLES valid and MAX_EXAMPLES invalid requests; fails on the first 5xx."""
    outcome = Outcome(statuses={})
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def no_server_error(case: Case[Any]) -> None:
            try:
                response = case.call(headers=headers)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                # Over a socket (against a cluster) uvicorn itself refuses a request whose
                # head (say, a metadata query near its 65536 characters, percent-encoded)
                # is over its limit: it answers 400 and closes while the body is still
                # being sent, which the client sees as a reset. No route ran.
                url = len(case.formatted_path) + len(urlencode(case.query or {}, doseq=True))
                if url < REQUEST_HEAD_LIMIT:
                    raise
                outcome.count(400, (case.path_parameters or {}).get("t"))
                return
            outcome.count(response.status_code, (case.path_parameters or {}).get("t"))
            assert response.status_code < 500, (
                f"{response.status_code} for {case.as_curl_command(headers=headers)}\n"
                f"{response.text[:2000]}"
            )

        try:
            no_server_error()
        except Unsatisfiable:
            if mode is GenerationMode.POSITIVE:
                raise
            outcome.invalid_impossible = True
    return outcome


def _fuzz(
    schema: Any, headers: dict[str, str], subtests: pytest.Subtests, wanted: Callable[[Any], bool]
) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    for result in schema.get_all_operations():
        operation = result.ok()  # an operation schemathesis cannot read is an error here
        if not wanted(operation):
            continue
        with subtests.test(msg=operation.label):
            outcomes[operation.label] = _fuzz_operation(operation, headers)
    return outcomes


def _is_tenant_admin_route(operation: Any) -> bool:
    return "tenants and keys" in (operation.tags or [])


def _is_tenant_data_route(operation: Any) -> bool:
    return not _is_tenant_admin_route(operation)


def _assert_the_fuzz_went_deep(outcomes: dict[str, Outcome]) -> None:
    """Most requests reached a route of the real tenant: not all 401/404 at the guard."""
    for label, outcome in outcomes.items():
        sent = sum(outcome.statuses.values())
        # An operation without parameters has exactly one request to send.
        assert sent >= (1 if outcome.invalid_impossible and "{" not in label else 10), (
            f"{label}: only {sent} requests"
        )
        if "{t}" in label:
            assert outcome.pinned >= sent // 2, (
                f"{label}: t was the real tenant {outcome.pinned}/{sent}"
            )
        assert set(outcome.statuses) - {401, 404}, f"{label}: {outcome.statuses}"


# The keys limited to a group go first: the writer's fuzzing deletes the documents.
def test_no_request_of_a_reader_limited_to_a_group_makes_the_server_fail(
    api: ApiUnderTest, fuzzed: Fuzzed, subtests: pytest.Subtests
) -> None:
    """Documents, search and answers with a reader key of the group ``eng`` (403 on writes,
    404 for documents outside the group)."""
    outcomes = _fuzz(_schema(api, fuzzed), fuzzed.grouped_reader, subtests, _is_tenant_data_route)
    _assert_the_fuzz_went_deep(outcomes)


def test_no_request_of_an_admin_limited_to_a_group_makes_the_server_fail(
    api: ApiUnderTest, fuzzed: Fuzzed, subtests: pytest.Subtests
) -> None:
    """Keys and the audit log with an admin key of the group ``eng``."""
    outcomes = _fuzz(_schema(api, fuzzed), fuzzed.grouped_admin, subtests, _is_tenant_admin_route)
    _assert_the_fuzz_went_deep(outcomes)


def test_no_request_of_a_tenant_writer_makes_the_server_fail(
    api: ApiUnderTest, fuzzed: Fuzzed, subtests: pytest.Subtests
) -> None:
    """Documents, search, answers and the health routes, with a writer key of the tenant."""
    outcomes = _fuzz(_schema(api, fuzzed), fuzzed.writer, subtests, _is_tenant_data_route)
    assert {"GET /healthz", "GET /v1/tenants/{t}/documents"} <= set(outcomes)
    _assert_the_fuzz_went_deep(outcomes)
    successes = {label for label, o in outcomes.items() if any(200 <= s < 300 for s in o.statuses)}
    assert {
        "PUT /v1/tenants/{t}/documents/{doc_id}",
        "GET /v1/tenants/{t}/documents/{doc_id}",
        "POST /v1/tenants/{t}/search",
        "POST /v1/tenants/{t}/answer",
    } <= successes


def test_no_request_of_the_root_key_makes_the_server_fail(
    api: ApiUnderTest, fuzzed: Fuzzed, subtests: pytest.Subtests
) -> None:
    """Tenants, keys, audit logs and whoami, with the operator's root key."""
    outcomes = _fuzz(_schema(api, fuzzed, as_root=True), api.root, subtests, _is_tenant_admin_route)
    assert {"POST /v1/tenants", "DELETE /v1/tenants/{t}/keys/{key_id}"} <= set(outcomes)
    _assert_the_fuzz_went_deep(outcomes)


def test_no_request_of_a_tenant_admin_makes_the_server_fail(
    api: ApiUnderTest, fuzzed: Fuzzed, subtests: pytest.Subtests
) -> None:
    """The same routes with the tenant's admin key (403 where only root may act)."""
    outcomes = _fuzz(_schema(api, fuzzed), fuzzed.admin, subtests, _is_tenant_admin_route)
    _assert_the_fuzz_went_deep(outcomes)


def test_the_tenant_under_test_survived_the_fuzzing(api: ApiUnderTest, fuzzed: Fuzzed) -> None:
    assert api.client.get(f"/v1/tenants/{TENANT}", headers=api.root).status_code == 200
    assert api.client.get("/healthz").status_code == 200
    assert api.client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    "filters",
    [
        pytest.param({"a:b": "x"}, id="colon-in-key"),
        pytest.param({"team lead": "x"}, id="space-in-key"),
        pytest.param({"a[0]": 1}, id="brackets-in-key"),
        pytest.param({"*": True}, id="star-key"),
        pytest.param({"n": 2**63}, id="int-over-int64"),
        pytest.param({"n": [-(2**63) - 1]}, id="list-int-under-int64"),
    ],
)
@pytest.mark.parametrize("route", ["search", "answer"])
def test_a_filter_the_engine_cannot_express_is_a_4xx_not_a_5xx(
    api: ApiUnderTest, fuzzed: Fuzzed, route: str, filters: dict[str, Any]
) -> None:
    """Found by the fuzz: filter keys become engine JSON paths; integers must fit 64 bits."""
    field = "query" if route == "search" else "question"
    answer = api.client.post(
        f"/v1/tenants/{TENANT}/{route}",
        json={field: "failover", "filters": filters},
        headers=fuzzed.writer,
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_parameter"
