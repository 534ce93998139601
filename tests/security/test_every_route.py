"""Every route of the OpenAPI document, called by every kind of key that must not see a
victim's data, with a few spellings of the victim's tenant id.

Generated from ``app.openapi()``: a new route is attacked here without anyone remembering to
add it (a route with a body needs an entry in ``BODIES``, or this test fails and says so).

The victim tenant holds a ``legal`` document (hidden from ``eng`` keys), a deleted ``legal``
document, an ``eng`` document and a public one. The attackers: every role of another tenant
(with and without groups), every role of the victim limited to ``eng``, a revoked key, no key.
For each answer: never a 5xx; an attacker from outside the tenant gets no 2xx on the tenant's
routes and none of its data; an ``eng`` key gets nothing of the ``legal`` documents nor of keys
outside its groups. What the caller itself put in the URL may be echoed in an error.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest

from tests.api.conftest import ApiUnderTest, bearer

LEGAL_TEXT = "The Initech merger escrow is 7,215,000 dollars, released in April."
GONE_TEXT = "The Initech side letter waives the earn-out for the founders."
ENG_TEXT = "The eng team rotates the on-call pager every Tuesday."
PUBLIC_TEXT = "The office is closed on public holidays."
HIDDEN_DOC = "legal/escrow.txt"
GONE_DOC = "legal/side-letter.txt"

#: A request body per route that takes one (method, OpenAPI path).
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/tenants"): {"json": {"id": "made-by-an-attacker"}},
    ("POST", "/v1/tenants/{t}/keys"): {"json": {"role": "admin"}},
    ("PUT", "/v1/tenants/{t}/documents/{doc_id}"): {
        "content": b"overwritten by an attacker",
        "headers": {"Content-Type": "text/plain"},
    },
    ("POST", "/v1/tenants/{t}/search"): {"json": {"query": "Initech merger escrow dollars"}},
    ("POST", "/v1/tenants/{t}/answer"): {"json": {"question": "How large is the escrow?"}},
    ("POST", "/v1/tenants/{t}/embeddings"): {"json": {"texts": ["escrow"]}},
    ("POST", "/v1/admin/tenants/{tenant}/promote"): {"json": {"shards": 1}},
}


@dataclass
class Victim:
    """The victim tenant, its secrets and the keys that attack it."""

    tenant: str
    admin_key_id: str
    attackers: dict[str, dict[str, str]] = field(default_factory=dict)


def _put(
    api: ApiUnderTest, tenant: str, doc: str, text: str, key: dict[str, str], acl: str = ""
) -> None:
    headers = {**key, "Content-Type": "text/plain"}
    if acl:
        headers["X-Shardrag-Acl"] = acl
    put = api.client.put(
        f"/v1/tenants/{tenant}/documents/{doc}",
        content=text.encode(),
        params={"wait": "true"},
        headers=headers,
    )
    assert put.status_code == 200, put.text


def _key(api: ApiUnderTest, tenant: str, role: str, groups: list[str] | None) -> dict[str, Any]:
    made = api.client.post(
        f"/v1/tenants/{tenant}/keys", json={"role": role, "groups": groups}, headers=api.root
    )
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


@pytest.fixture(scope="module")
def victim(api: ApiUnderTest) -> Victim:
    tenant = f"victim-{secrets.token_hex(3)}"
    keys = api.tenant(tenant)
    _put(api, tenant, HIDDEN_DOC, LEGAL_TEXT, keys["writer"], "legal")
    _put(api, tenant, GONE_DOC, GONE_TEXT, keys["writer"], "legal")
    _put(api, tenant, "eng/pager.txt", ENG_TEXT, keys["writer"], "eng")
    _put(api, tenant, "public/holidays.txt", PUBLIC_TEXT, keys["writer"])
    deleted = api.client.delete(
        f"/v1/tenants/{tenant}/documents/{GONE_DOC}", headers=keys["writer"]
    )
    assert deleted.status_code == 200, deleted.text
    admin = _key(api, tenant, "admin", None)
    found = Victim(tenant, admin["id"])
    for role in ("admin", "writer", "reader"):
        found.attackers[f"victim {role} of eng"] = bearer(_key(api, tenant, role, ["eng"])["key"])
    outsider = f"outsider-{secrets.token_hex(3)}"
    api.tenant(outsider)
    for role in ("admin", "writer", "reader"):
        for groups in (None, ["legal"]):
            label = f"outsider {role}" + (" of legal" if groups else "")
            found.attackers[label] = bearer(_key(api, outsider, role, groups)["key"])
    revoked = _key(api, tenant, "admin", None)
    gone = api.client.delete(f"/v1/tenants/{tenant}/keys/{revoked['id']}", headers=api.root)
    assert gone.status_code == 200, gone.text
    found.attackers["revoked admin"] = bearer(revoked["key"])
    found.attackers["no key"] = {}
    return found


def _routes(api: ApiUnderTest) -> list[tuple[str, str]]:
    paths: dict[str, dict[str, Any]] = api.app.openapi()["paths"]
    return [(method.upper(), path) for path, ops in paths.items() for method in ops]


def _spellings(tenant: str) -> list[str]:
    """The tenant id as given, and spellings a lax router might take for it."""
    return [tenant, tenant.upper(), quote(f"{tenant}\n"), quote(f"./{tenant}", safe="")]


def _urls(path: str, victim: Victim) -> list[str]:
    values = {
        "doc_id": [HIDDEN_DOC, GONE_DOC],
        "key_id": [victim.admin_key_id],
        "dead_letter_id": ["1"],
    }
    urls = [path]
    for name in re.findall(r"{(\w+)}", path):
        options = _spellings(victim.tenant) if name in ("t", "tenant") else values[name]
        urls = [u.replace(f"{{{name}}}", option) for u in urls for option in options]
    return urls


def _secrets(victim: Victim, outsider: bool) -> list[str]:
    hidden = [LEGAL_TEXT, GONE_TEXT, HIDDEN_DOC, GONE_DOC, victim.admin_key_id, "Initech"]
    if outsider:
        hidden += [ENG_TEXT, PUBLIC_TEXT, "eng/pager.txt", "public/holidays.txt"]
    return hidden


@pytest.mark.parametrize(
    "attacker",
    [
        *(f"victim {r} of eng" for r in ("admin", "writer", "reader")),
        *(f"outsider {r}{g}" for r in ("admin", "writer", "reader") for g in ("", " of legal")),
        "revoked admin",
        "no key",
    ],
)
def test_no_route_lets_an_attacker_through(
    api: ApiUnderTest, victim: Victim, attacker: str
) -> None:
    key = victim.attackers[attacker]
    outsider = not attacker.startswith("victim")
    missing = [r for r in _routes(api) if r not in BODIES and _takes_body(api, *r)]
    assert not missing, f"routes with a body and no entry in BODIES: {missing}"
    breaches: list[str] = []
    sent_urls: list[str] = []
    for method, path in _routes(api):
        for url in _urls(path, victim):
            extra = BODIES.get((method, path), {})
            headers = {**key, **extra.get("headers", {})}
            sent = {k: v for k, v in extra.items() if k != "headers"}
            got = api.client.request(method, url, headers=headers, **sent)
            what = f"{attacker}: {method} {url} -> {got.status_code}"
            if got.status_code >= 500:
                breaches.append(f"{what} (server error) {got.text[:200]}")
                continue
            tenant_route = path.startswith(("/v1/tenants/{t}", "/v1/admin"))
            if outsider and tenant_route and got.is_success:
                breaches.append(f"{what}: an outsider was served")
            named = any(s in url for s in (HIDDEN_DOC, GONE_DOC, victim.admin_key_id))
            widened = (method, path) == ("POST", "/v1/tenants/{t}/keys")  # an ungrouped key
            if not outsider and (named or widened) and got.is_success:
                breaches.append(f"{what}: reached what its groups do not")
            shown = got.text + " ".join(got.headers.values())
            # The audit log shows the caller's own refused probes, with what it put in them.
            own = "".join(sent_urls) if path.endswith("/audit") else url
            leaked = [s for s in _secrets(victim, outsider) if s in shown and s not in own]
            if leaked:
                breaches.append(f"{what}: leaked {leaked} in {shown[:300]}")
            sent_urls.append(url)
    assert not breaches, "\n".join(breaches)


def _takes_body(api: ApiUnderTest, method: str, path: str) -> bool:
    operation = api.app.openapi()["paths"][path][method.lower()]
    return "requestBody" in operation


def test_the_victims_own_keys_still_work(api: ApiUnderTest, victim: Victim) -> None:
    """The attacks above must fail for want of rights, not because the victim is broken."""
    legal = bearer(_key(api, victim.tenant, "reader", ["legal"])["key"])
    got = api.client.get(f"/v1/tenants/{victim.tenant}/documents/{HIDDEN_DOC}", headers=legal)
    assert got.status_code == 200, got.text
    found = api.client.post(
        f"/v1/tenants/{victim.tenant}/search",
        json={"query": "Initech merger escrow dollars"},
        headers=legal,
    )
    assert HIDDEN_DOC in {h["doc_id"] for h in found.json()["hits"]}
    eng = victim.attackers["victim reader of eng"]
    mine = api.client.get(f"/v1/tenants/{victim.tenant}/documents/eng/pager.txt", headers=eng)
    assert mine.status_code == 200, mine.text
