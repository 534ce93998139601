"""Two tenants, every tenant route tried with the other tenant's keys and ids: zero leaks.

Tenant ``iso-alpha`` (A) holds documents with words found nowhere else; tenant ``iso-bravo``
(B) has its own documents and a key of every role. Every route of the app whose path names a
tenant ``{t}`` is enumerated from the OpenAPI schema (a new route is covered without editing
this file) and called with each of B's keys naming A, filled with A's document ids, key ids
and write tokens. The guard must answer 404 ``tenant_not_found`` before any route runs, exactly
as for a tenant that does not exist, and nothing of A may show in any answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from tests.api.conftest import ApiUnderTest

A = "iso-alpha"
B = "iso-bravo"
GHOST = "iso-ghost"  # never created: the answer for A must look exactly like this one's
ROLES = ("admin", "writer", "reader")

# Words that occur in A's documents and nowhere else.
A_SECRETS = ("quokkafjord", "zanzibarite", "vellichor")
A_ONLY_DOC = "vault/quokkafjord-ledger.md"
A_DOCS = {
    A_ONLY_DOC: "# Ledger\n\nThe quokkafjord reserve holds 40 tonnes of zanzibarite ore.",
    "finance/forecast.txt": "Forecast: vellichor revenue doubles when zanzibarite sells.",
}
# The same id in both tenants, with different content and metadata.
SHARED_DOC = "shared/handbook.md"
A_SHARED = "# Handbook\n\nAlpha staff meet at the quokkafjord pier every morning."
B_SHARED = "# Handbook\n\nBravo staff meet at the harbour cafe every morning."
B_DOCS = {
    "notes/meeting.txt": "The bravo team reviews the harbour budget on Mondays.",
    "ops/runbook.md": "# Runbook\n\nRestart the harbour crane when the winch stalls.",
}


@dataclass
class World:
    """The two tenants, their keys, and what of A must never reach B."""

    a_keys: dict[str, dict[str, str]]
    b_keys: dict[str, dict[str, str]]
    a_key_ids: dict[str, str]
    a_spare_key_id: str
    a_write_tokens: list[str]
    a_versions: dict[str, int]
    a_doc_ids: tuple[str, ...] = (*A_DOCS, SHARED_DOC)

    def needles(self) -> list[str]:
        """Strings of A that must not appear in any answer to B (the shared id excepted)."""
        return [
            *A_SECRETS,
            *(d for d in self.a_doc_ids if d != SHARED_DOC),
            *self.a_key_ids.values(),
            self.a_spare_key_id,
            *self.a_write_tokens,
        ]


@dataclass
class Probe:
    """One request of B naming A (or the ghost tenant), and the answer."""

    method: str
    path: str
    role: str
    tenant: str
    url: str
    status: int
    body: Any
    text: str
    headers: dict[str, str] = field(default_factory=dict)

    def label(self) -> str:
        return f"{self.method} {self.path} with B's {self.role} key naming {self.tenant}"


def _put(api: ApiUnderTest, tenant: str, headers: dict[str, str], doc_id: str, text: str) -> Any:
    put = api.client.put(
        f"/v1/tenants/{tenant}/documents/{doc_id}",
        params={"wait": "true", "metadata": json.dumps({"owner": tenant})},
        content=text.encode(),
        headers={**headers, "Content-Type": "text/plain"},
    )
    assert put.status_code == 200 and put.json()["state"] == "live", put.text
    return put.json()


def _key_id(api: ApiUnderTest, headers: dict[str, str]) -> str:
    who = api.client.get("/v1/whoami", headers=headers)
    assert who.status_code == 200, who.text
    key_id: str = who.json()["key_id"]
    return key_id


@pytest.fixture(scope="module")
def world(api: ApiUnderTest) -> World:
    a_keys, b_keys = api.tenant(A), api.tenant(B)
    spare = api.client.post(f"/v1/tenants/{A}/keys", json={"role": "reader"}, headers=api.root)
    assert spare.status_code == 201, spare.text
    tokens, versions = [], {}
    for doc_id, text in [*A_DOCS.items(), (SHARED_DOC, A_SHARED)]:
        written = _put(api, A, a_keys["writer"], doc_id, text)
        tokens.append(written["write_token"])
        versions[doc_id] = written["version"]
    for doc_id, text in [*B_DOCS.items(), (SHARED_DOC, B_SHARED)]:
        _put(api, B, b_keys["writer"], doc_id, text)
    return World(
        a_keys=a_keys,
        b_keys=b_keys,
        a_key_ids={role: _key_id(api, a_keys[role]) for role in ROLES},
        a_spare_key_id=spare.json()["id"],
        a_write_tokens=tokens,
        a_versions=versions,
    )


# --- Building a request for any route from its OpenAPI operation -------------------------

SCHEMA_REF = "#/components/schemas/"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _path_values(world: World, tenant: str) -> dict[str, str]:
    """A value for every path parameter a tenant route may have: A's own ids."""
    return {
        "t": tenant,
        "doc_id": A_ONLY_DOC,
        "key_id": world.a_key_ids["admin"],
        "dead_letter_id": "1",
    }


def _field_values(world: World) -> dict[str, Any]:
    """Body fields filled with what would reveal A's data if the request got through."""
    return {
        "query": A_SECRETS[0],
        "question": f"What does {A_SECRETS[0]} hold?",
        "write_token": world.a_write_tokens[0],
        "read_concern": "session",
        "role": "admin",
        "name": "planted by bravo",
    }


def _example(spec: dict[str, Any], schema: dict[str, Any], values: dict[str, Any]) -> Any:
    """A small valid instance of a JSON schema: known fields from ``values``, others typed."""
    if "$ref" in schema:
        return _example(
            spec, spec["components"]["schemas"][schema["$ref"][len(SCHEMA_REF) :]], values
        )
    for combined in ("anyOf", "oneOf", "allOf"):
        if combined in schema:
            return _example(spec, schema[combined][0], values)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        return {
            name: values[name] if name in values else _example(spec, sub, values)
            for name, sub in properties.items()
            if name in values or name in schema.get("required", [])
        }
    defaults: dict[str, Any] = {"string": "x", "integer": 1, "number": 1, "boolean": False}
    return defaults.get(str(kind)) if kind != "array" else []


def _request_kwargs(
    spec: dict[str, Any], operation: dict[str, Any], world: World
) -> dict[str, Any]:
    content: dict[str, Any] = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        return {"json": _example(spec, content["application/json"]["schema"], _field_values(world))}
    if content:  # a document upload: raw bytes B would plant in A
        return {
            "content": b"Planted by bravo: " + A_SECRETS[0].encode(),
            "headers": {"Content-Type": "text/plain"},
        }
    return {}


def tenant_routes(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) of every route of the schema whose path names a tenant."""
    for path, operations in spec["paths"].items():
        if "{t}" in path:
            for method, operation in operations.items():
                if method in HTTP_METHODS:
                    yield method.upper(), path, operation


def _url(path: str, values: dict[str, str]) -> str:
    url = path
    for name in [p.split("}")[0] for p in path.split("{")[1:]]:
        assert name in values, f"{path}: add a value of A for the path parameter {{{name}}}"
        url = url.replace(f"{{{name}}}", quote(values[name], safe="/"))
    return url


def _probe(
    api: ApiUnderTest,
    world: World,
    method: str,
    path: str,
    operation: dict[str, Any],
    role: str,
    tenant: str,
) -> Probe:
    spec = api.app.openapi()
    url = _url(path, _path_values(world, tenant))
    kwargs = _request_kwargs(spec, operation, world)
    kwargs["headers"] = {**kwargs.get("headers", {}), **world.b_keys[role]}
    answer = api.client.request(method, url, **kwargs)
    try:
        body = answer.json()
    except ValueError:
        body = None
    return Probe(
        method, path, role, tenant, url, answer.status_code, body, answer.text, dict(answer.headers)
    )


@pytest.fixture(scope="module")
def probes(api: ApiUnderTest, world: World) -> list[Probe]:
    """Every tenant route × every role of B, naming A and naming a tenant that does not exist."""
    spec = api.app.openapi()
    return [
        _probe(api, world, method, path, operation, role, tenant)
        for method, path, operation in tenant_routes(spec)
        for role in ROLES
        for tenant in (A, GHOST)
    ]


def _error_shape_ok(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"error"}
        and set(body["error"]) == {"code", "message", "details"}
    )


def _leaks(world: World, text: str) -> list[str]:
    return [needle for needle in world.needles() if needle in text]


# --- The specification ---------------------------------------------------------------------


def test_every_tenant_route_answers_404_to_another_tenants_key(probes: list[Probe]) -> None:
    wrong = [
        f"{p.label()}: {p.status} {p.text[:200]}"
        for p in probes
        if p.tenant == A
        and not (
            p.status == 404
            and _error_shape_ok(p.body)
            and p.body["error"]["code"] == "tenant_not_found"
        )
    ]
    assert not wrong, "\n".join(wrong)


def test_no_answer_to_another_tenants_key_reveals_its_words_documents_or_keys(
    world: World, probes: list[Probe]
) -> None:
    leaked = [
        f"{p.label()}: {leaks}"
        for p in probes
        if (leaks := _leaks(world, p.text + json.dumps(p.headers)))
    ]
    assert not leaked, "\n".join(leaked)


def test_another_tenant_is_indistinguishable_from_a_tenant_that_does_not_exist(
    probes: list[Probe],
) -> None:
    ghost = {(p.method, p.path, p.role): p for p in probes if p.tenant == GHOST}
    different = []
    for p in (p for p in probes if p.tenant == A):
        twin = ghost[(p.method, p.path, p.role)]
        if (p.status, json.loads(p.text.replace(A, GHOST))) != (twin.status, twin.body):
            different.append(f"{p.label()}: {p.text[:150]} vs {twin.text[:150]}")
    assert not different, "\n".join(different)


def test_the_probes_exercised_every_tenant_route_of_the_schema(
    api: ApiUnderTest, probes: list[Probe]
) -> None:
    in_schema = {(method, path) for method, path, _ in tenant_routes(api.app.openapi())}
    exercised = {(p.method, p.path) for p in probes}
    assert exercised == in_schema
    # Sanity: the enumeration really sees the tenant routes (not an empty or partial schema).
    assert {
        ("PUT", "/v1/tenants/{t}/documents/{doc_id}"),
        ("POST", "/v1/tenants/{t}/search"),
        ("DELETE", "/v1/tenants/{t}/keys/{key_id}"),
        ("DELETE", "/v1/tenants/{t}"),
    } <= exercised
    assert {(p.method, p.path, p.role) for p in probes if p.tenant == A} == {
        (m, path, role) for m, path in in_schema for role in ROLES
    }


def _app_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(METHOD, path) of every route the app serves, whether in its schema or not.

    FastAPI 0.16x keeps included routers as lazy branches (``effective_route_contexts``); an
    older FastAPI lists plain routes. A mount is reported with the method ``MOUNT``.
    """
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        entries = (
            [(c.path, c.original_route) for c in contexts()]
            if contexts
            else [(getattr(route, "path", ""), route)]
        )
        for path, original in entries:
            methods = getattr(original, "methods", None) or {"MOUNT"}
            for method in methods - {"HEAD"}:
                yield method, re.sub(r":\w+}", "}", path)


def test_every_tenant_route_of_the_app_is_in_the_schema(api: ApiUnderTest) -> None:
    """A route hidden from the schema (include_in_schema=False, a mount) would escape the probes."""
    in_schema = {(method, path) for method, path, _ in tenant_routes(api.app.openapi())}
    served = set(_app_routes(api.app))
    assert len(served) > len(in_schema)  # the walk sees the app's routes, not nothing
    assert not {(m, p) for m, p in served if p.startswith("/v1") and m == "MOUNT"}
    assert {(m, p) for m, p in served if "{t}" in p} == in_schema


def test_the_same_requests_with_the_tenants_own_key_do_reach_its_data(
    api: ApiUnderTest, world: World
) -> None:
    """The probes name real things: A's own admin key reads them (so B's 404 is the guard's)."""
    spec = api.app.openapi()
    reads = [
        (method, path, op)
        for method, path, op in tenant_routes(spec)
        if method == "GET" or path.endswith(("/search", "/answer"))
    ]
    assert len(reads) >= 5
    for method, path, operation in reads:
        kwargs = _request_kwargs(spec, operation, world)
        url = _url(path, _path_values(world, A))
        answer = api.client.request(method, url, **{**kwargs, "headers": world.a_keys["admin"]})
        assert answer.status_code == 200, f"{method} {path}: {answer.text[:200]}"
    search = api.client.post(
        f"/v1/tenants/{A}/search",
        json=_example(spec, {"$ref": SCHEMA_REF + "SearchBody"}, _field_values(world)),
        headers=world.a_keys["reader"],
    )
    assert A_SECRETS[0] in search.text  # what B's identical request would have leaked


def test_the_other_tenants_data_is_untouched_by_the_probes(
    api: ApiUnderTest, world: World, probes: list[Probe]
) -> None:
    assert probes  # B's deletes, puts and key requests against A have all been tried
    tenant = api.client.get(f"/v1/tenants/{A}", headers=api.root)
    assert tenant.status_code == 200
    for doc_id, version in world.a_versions.items():
        doc = api.client.get(f"/v1/tenants/{A}/documents/{doc_id}", headers=world.a_keys["reader"])
        assert doc.status_code == 200, doc.text
        assert (doc.json()["state"], doc.json()["version"]) == ("live", version)
    keys = api.client.get(f"/v1/tenants/{A}/keys", headers=world.a_keys["admin"]).json()["keys"]
    assert {k["id"] for k in keys} == {*world.a_key_ids.values(), world.a_spare_key_id}
    assert all(k["revoked_at"] is None for k in keys)
    assert all(k["name"] != "planted by bravo" for k in keys)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(f"/v1/tenants/{A}/documents/", id="trailing-slash"),
        pytest.param("/v1/tenants/%69so-alpha/documents", id="percent-encoded-letter"),
        pytest.param(f"/v1/tenants/{B}/../{A}/documents", id="dot-dot-from-own-tenant"),
        pytest.param(f"/v1/tenants/{B}/%2e%2e/{A}/documents", id="encoded-dot-dot"),
        pytest.param(f"/v1/tenants/{B}/documents/..%2F..%2F{A}%2Fdocuments", id="encoded-slashes"),
        pytest.param(f"/v1/tenants/{A}%0A/documents", id="newline-after-tenant"),
        pytest.param(f"/v1/tenants/{A}%00/documents", id="nul-after-tenant"),
        pytest.param(f"/v1/tenants/{A.upper()}/documents", id="upper-case"),
        pytest.param(f"/v1/tenants/{A}/documents/{quote(A_ONLY_DOC, safe='')}", id="encoded-doc"),
        pytest.param(f"/v1/tenants/{A}/./documents", id="dot-segment"),
        pytest.param(f"/v1//tenants/{A}/documents", id="double-slash"),
    ],
)
def test_no_spelling_of_a_path_reaches_another_tenant(
    api: ApiUnderTest, world: World, path: str
) -> None:
    for role in ROLES:
        answer = api.client.get(path, headers=world.b_keys[role])
        assert 400 <= answer.status_code < 500, f"{role}: {answer.status_code} {answer.text}"
        assert _error_shape_ok(answer.json()), answer.text
        assert not _leaks(world, answer.text), answer.text


def test_a_search_with_another_tenants_write_token_reveals_nothing(
    api: ApiUnderTest, world: World
) -> None:
    for token in world.a_write_tokens:
        answer = api.client.post(
            f"/v1/tenants/{B}/search",
            json={"query": A_SECRETS[0], "read_concern": "session", "write_token": token},
            headers=world.b_keys["reader"],
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "invalid_parameter"
        assert not _leaks(world, answer.text), answer.text


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_searching_another_tenants_secret_words_finds_only_ones_own_documents(
    api: ApiUnderTest, world: World, mode: str
) -> None:
    for word in A_SECRETS:
        answer = api.client.post(
            f"/v1/tenants/{B}/search",
            json={"query": word, "k": 50, "mode": mode},
            headers=world.b_keys["reader"],
        )
        assert answer.status_code == 200, answer.text
        hits = answer.json()["hits"]
        assert all(h["metadata"] == {"owner": B} for h in hits), hits
        assert {h["doc_id"] for h in hits} <= {*B_DOCS, SHARED_DOC}
        assert not _leaks(world, answer.text), answer.text


def test_a_filter_naming_another_tenant_finds_nothing(api: ApiUnderTest, world: World) -> None:
    answer = api.client.post(
        f"/v1/tenants/{B}/search",
        json={"query": "staff meet every morning", "filters": {"owner": A}},
        headers=world.b_keys["reader"],
    )
    assert answer.status_code == 200 and answer.json()["hits"] == []


def test_an_answer_for_another_tenants_question_uses_only_ones_own_documents(
    api: ApiUnderTest, world: World
) -> None:
    answer = api.client.post(
        f"/v1/tenants/{B}/answer",
        json={"question": f"How much {A_SECRETS[1]} does the {A_SECRETS[0]} reserve hold?"},
        headers=world.b_keys["reader"],
    )
    assert answer.status_code == 200, answer.text
    assert all(h["metadata"] == {"owner": B} for h in answer.json()["hits"])
    assert not _leaks(world, answer.text.replace(A_SECRETS[0], "").replace(A_SECRETS[1], ""))
    assert "40 tonnes" not in answer.text


@pytest.mark.parametrize("state", [None, "live", "pending", "failed", "deleted"])
def test_listing_ones_documents_never_shows_another_tenants(
    api: ApiUnderTest, world: World, state: str | None
) -> None:
    params: dict[str, str | int] = {"limit": 1000, **({"state": state} if state else {})}
    answer = api.client.get(
        f"/v1/tenants/{B}/documents", params=params, headers=world.b_keys["reader"]
    )
    assert answer.status_code == 200, answer.text
    documents = answer.json()["documents"]
    assert all(d["tenant"] == B and d["metadata"] == {"owner": B} for d in documents)
    assert not _leaks(world, answer.text), answer.text
    if state in (None, "live"):
        assert {d["doc_id"] for d in documents} == {*B_DOCS, SHARED_DOC}


def test_a_document_id_both_tenants_use_gives_each_its_own(api: ApiUnderTest, world: World) -> None:
    for tenant, keys in ((A, world.a_keys), (B, world.b_keys)):
        doc = api.client.get(f"/v1/tenants/{tenant}/documents/{SHARED_DOC}", headers=keys["reader"])
        assert doc.status_code == 200 and doc.json()["metadata"] == {"owner": tenant}
    hits = api.client.post(
        f"/v1/tenants/{B}/search",
        json={"query": "where do staff meet"},
        headers=world.b_keys["reader"],
    ).json()["hits"]
    shared = [h for h in hits if h["doc_id"] == SHARED_DOC]
    assert shared and all("harbour cafe" in h["text"] for h in shared)


def test_the_audit_log_never_shows_another_tenants_events(
    api: ApiUnderTest, world: World, probes: list[Probe]
) -> None:
    assert probes  # B's attempts on A are over
    answer = api.client.get(
        f"/v1/tenants/{B}/audit", params={"limit": 1000}, headers=world.b_keys["admin"]
    )
    assert answer.status_code == 200, answer.text
    events = answer.json()["events"]
    assert events and all(e["tenant"] == B for e in events)
    assert {e["action"] for e in events} >= {"document.put"}
    assert not _leaks(world, answer.text), answer.text
    # And A's own log does not hold B's doings either.
    a_log = api.client.get(
        f"/v1/tenants/{A}/audit", params={"limit": 1000}, headers=world.a_keys["admin"]
    ).json()["events"]
    assert all(e["tenant"] == A for e in a_log)
    assert not any("bravo" in json.dumps(e) for e in a_log)
