"""The tenant and group walls, attacked over HTTP with valid keys: each finding of the
adversarial review (issue 25) as a regression test that failed on the code before its fix.

Every test makes its own tenant; "hidden" means a document of a group the attacking key
does not hold. A test that proves a wall also proves, beside it, that the signal it hides
exists where the caller may see it (so the test can fail).
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest

from tests.api.conftest import ApiUnderTest, bearer

SECRET = "The settlement with Globex closes at 4,350,000 euros on the ninth of March."


def _tenant(api: ApiUnderTest, prefix: str) -> tuple[str, dict[str, dict[str, str]]]:
    tenant = f"{prefix}-{secrets.token_hex(3)}"
    return tenant, api.tenant(tenant)


def _key(
    api: ApiUnderTest, tenant: str, role: str, groups: list[str] | None, by: dict[str, str]
) -> Any:
    return api.client.post(
        f"/v1/tenants/{tenant}/keys", json={"role": role, "groups": groups}, headers=by
    )


def _grouped(api: ApiUnderTest, tenant: str, role: str, *groups: str) -> dict[str, str]:
    made = _key(api, tenant, role, list(groups), api.root)
    assert made.status_code == 201, made.text
    return bearer(made.json()["key"])


def _put(
    api: ApiUnderTest,
    tenant: str,
    doc_id: str,
    text: str,
    key: dict[str, str],
    acl: str | None = None,
    **headers: str,
) -> Any:
    sent = {**key, "Content-Type": "text/plain", **headers}
    if acl is not None:
        sent["X-Shardrag-Acl"] = acl
    return api.client.put(
        f"/v1/tenants/{tenant}/documents/{doc_id}",
        content=text.encode(),
        params={"wait": "true"},
        headers=sent,
    )


def _audit_targets(api: ApiUnderTest, tenant: str, key: dict[str, str]) -> list[str]:
    got = api.client.get(f"/v1/tenants/{tenant}/audit", params={"limit": 1000}, headers=key)
    assert got.status_code == 200, got.text
    return [e["target"] for e in got.json()["events"]]


# -- 1. a grouped admin stays within its groups ----------------------------------------------


def test_a_grouped_admin_makes_keys_only_within_its_groups(api: ApiUnderTest) -> None:
    tenant, keys = _tenant(api, "keys")
    hr_admin = _grouped(api, tenant, "admin", "hr")
    for groups in (None, ["legal"], ["hr", "legal"]):
        refused = _key(api, tenant, "reader", groups, hr_admin)
        assert refused.status_code == 403, (groups, refused.text)
        assert refused.json()["error"]["code"] == "forbidden"
    made = _key(api, tenant, "reader", ["hr"], hr_admin)
    assert made.status_code == 201, made.text
    # The ungrouped admin may still make any key.
    assert _key(api, tenant, "reader", None, keys["admin"]).status_code == 201


def test_a_grouped_admin_sees_and_revokes_only_keys_within_its_groups(api: ApiUnderTest) -> None:
    tenant, keys = _tenant(api, "keylist")
    hr_admin = _grouped(api, tenant, "admin", "hr")
    legal = _key(api, tenant, "reader", ["legal"], api.root).json()
    hr = _key(api, tenant, "reader", ["hr"], api.root).json()
    listed = api.client.get(f"/v1/tenants/{tenant}/keys", headers=hr_admin).json()["keys"]
    seen = {k["id"] for k in listed}
    assert hr["id"] in seen
    assert legal["id"] not in seen
    assert all(k["groups"] is not None and set(k["groups"]) <= {"hr"} for k in listed)
    everything = api.client.get(f"/v1/tenants/{tenant}/keys", headers=keys["admin"]).json()
    assert legal["id"] in {k["id"] for k in everything["keys"]}
    gone = api.client.delete(f"/v1/tenants/{tenant}/keys/{legal['id']}", headers=hr_admin)
    assert gone.status_code == 404, gone.text
    still = api.client.get("/v1/whoami", headers=bearer(legal["key"]))
    assert still.status_code == 200
    assert (
        api.client.delete(f"/v1/tenants/{tenant}/keys/{hr['id']}", headers=hr_admin).status_code
        == 200
    )


def test_a_grouped_admin_reads_only_the_audit_of_its_groups(api: ApiUnderTest) -> None:
    tenant, keys = _tenant(api, "audit")
    assert _put(api, tenant, "legal/settlement.txt", SECRET, keys["writer"], "legal").is_success
    assert _put(api, tenant, "hr/leave.txt", "Leave policy text.", keys["writer"], "hr").is_success
    hr_admin = _grouped(api, tenant, "admin", "hr")
    seen = _audit_targets(api, tenant, hr_admin)
    assert "hr/leave.txt" in seen
    assert "legal/settlement.txt" not in seen
    assert "legal/settlement.txt" in _audit_targets(api, tenant, keys["admin"])


# -- 2. a deletion keeps the groups of what it deleted ----------------------------------------


def test_a_deleted_hidden_document_stays_hidden(api: ApiUnderTest) -> None:
    tenant, keys = _tenant(api, "deleted")
    doc = "legal/settlement.txt"
    assert _put(api, tenant, doc, SECRET, keys["writer"], "legal").is_success
    gone = api.client.delete(f"/v1/tenants/{tenant}/documents/{doc}", headers=keys["writer"])
    assert gone.status_code == 200, gone.text
    eng_reader = _grouped(api, tenant, "reader", "eng")
    eng_writer = _grouped(api, tenant, "writer", "eng")
    legal_reader = _grouped(api, tenant, "reader", "legal")

    hidden = api.client.get(f"/v1/tenants/{tenant}/documents/{doc}", headers=eng_reader)
    assert hidden.status_code == 404, hidden.text
    listed = api.client.get(
        f"/v1/tenants/{tenant}/documents", params={"state": "deleted"}, headers=eng_reader
    )
    assert doc not in {d["doc_id"] for d in listed.json()["documents"]}
    taken = _put(api, tenant, doc, "eng's own text", eng_writer, "eng")
    assert taken.status_code == 404, taken.text

    shown = api.client.get(f"/v1/tenants/{tenant}/documents/{doc}", headers=legal_reader)
    assert shown.status_code == 200, shown.text
    assert shown.json()["state"] == "deleted"
    assert shown.json()["acl"] == ["legal"]


# -- 3. a write's answer says nothing of what the writer cannot read ---------------------------


def test_the_write_answer_does_not_confirm_hidden_text(api: ApiUnderTest) -> None:
    tenant, keys = _tenant(api, "oracle")
    assert _put(api, tenant, "legal/settlement.txt", SECRET, keys["writer"], "legal").is_success
    hr_writer = _grouped(api, tenant, "writer", "hr")
    guess = _put(api, tenant, "hr/guess.txt", SECRET, hr_writer, "hr")
    assert guess.status_code == 200, guess.text
    assert (guess.json()["reused_vectors"], guess.json()["embedded_chunks"]) == (0, 1)
    # Within its own groups the cache still serves: the same text again is reused.
    again = _put(api, tenant, "hr/guess-again.txt", SECRET, hr_writer, "hr")
    assert (again.json()["reused_vectors"], again.json()["embedded_chunks"]) == (1, 0)


def test_idempotency_keys_are_not_shared_across_groups(api: ApiUnderTest) -> None:
    tenant, _ = _tenant(api, "idem")
    hr_writer = _grouped(api, tenant, "writer", "hr")
    legal_writer = _grouped(api, tenant, "writer", "legal")
    key = {"Idempotency-Key": "upload-1"}
    first = _put(api, tenant, "legal/a.txt", SECRET, legal_writer, "legal", **key)
    assert first.status_code == 200, first.text
    other = _put(api, tenant, "hr/b.txt", "An hr note.", hr_writer, "hr", **key)
    assert other.status_code == 200, other.text
    assert other.headers.get("Idempotent-Replayed") is None
    # Within the same groups the key is still bound to its first request.
    conflict = _put(api, tenant, "legal/c.txt", "Another text.", legal_writer, "legal", **key)
    assert conflict.status_code == 409, conflict.text


# -- 4. a tenant made again under a dropped one's id inherits nothing -------------------------


def test_a_tenant_made_again_inherits_nothing(api: ApiUnderTest) -> None:
    tenant, keys = _tenant(api, "reborn")
    assert _put(api, tenant, "old/settlement.txt", SECRET, keys["writer"]).is_success
    searched = api.client.post(
        f"/v1/tenants/{tenant}/search", json={"query": "Globex settlement"}, headers=keys["reader"]
    )
    assert searched.json()["hits"], searched.text
    assert api.client.delete(f"/v1/tenants/{tenant}", headers=api.root).status_code == 200

    reborn = api.tenant(tenant)
    assert "old/settlement.txt" not in _audit_targets(api, tenant, reborn["admin"])
    again = api.client.post(
        f"/v1/tenants/{tenant}/search",
        json={"query": "Globex settlement"},
        headers=reborn["reader"],
    )
    assert again.json()["hits"] == [], again.text
    written = _put(api, tenant, "new/guess.txt", SECRET, reborn["writer"])
    assert written.status_code == 200, written.text
    assert (written.json()["reused_vectors"], written.json()["embedded_chunks"]) == (0, 1)
    # The operator still reads the dropped incarnation's trail (compliance).
    assert "old/settlement.txt" in _audit_targets(api, tenant, api.root)


# -- 6. a forged write token is refused, not a server error -----------------------------------


def _token(fields: dict[str, Any]) -> str:
    raw = json.dumps(fields).encode()
    return "wt1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "fields",
    [
        {"d": "a.txt", "v": 2**70},
        {"d": "a.txt", "v": 1, "p": 2**64},
        {"d": "a.txt", "v": True},
        {"d": "a.txt", "v": "1"},
        {"d": "a\x00b", "v": 1},
        {"d": ["a"], "v": 1},
    ],
)
def test_a_forged_write_token_is_refused(api: ApiUnderTest, fields: dict[str, Any]) -> None:
    tenant, keys = _tenant(api, "token")
    body = {
        "query": "anything",
        "read_concern": "session",
        "write_token": _token({"t": tenant, **fields}),
    }
    got = api.client.post(f"/v1/tenants/{tenant}/search", json=body, headers=keys["reader"])
    assert got.status_code == 422, got.text
    assert got.json()["error"]["code"] in ("invalid_parameter", "invalid_document_id")


# -- 8. the smaller gaps ----------------------------------------------------------------------


def test_a_repeated_groups_header_is_refused(api: ApiUnderTest) -> None:
    tenant, keys = _tenant(api, "header")
    headers = [
        *keys["reader"].items(),
        ("X-Shardrag-Groups", "eng"),
        ("X-Shardrag-Groups", "legal"),
    ]
    got = api.client.post(
        f"/v1/tenants/{tenant}/search", json={"query": "anything"}, headers=headers
    )
    assert got.status_code == 422, got.text
    once = api.client.post(
        f"/v1/tenants/{tenant}/search",
        json={"query": "anything"},
        headers={**keys["reader"], "X-Shardrag-Groups": "eng,legal"},
    )
    assert once.status_code == 200, once.text


@pytest.mark.parametrize("k", ["5", True, 5.5])
def test_numbers_are_not_coerced(api: ApiUnderTest, k: Any) -> None:
    tenant, keys = _tenant(api, "strict")
    got = api.client.post(
        f"/v1/tenants/{tenant}/search", json={"query": "anything", "k": k}, headers=keys["reader"]
    )
    assert got.status_code == 422, got.text


def test_a_nul_in_a_filename_is_refused(api: ApiUnderTest) -> None:
    tenant, keys = _tenant(api, "nul")
    got = api.client.put(
        f"/v1/tenants/{tenant}/documents/a.txt",
        content=b"some text",
        params={"filename": "a\x00.txt"},
        headers={**keys["writer"], "Content-Type": "text/plain"},
    )
    assert got.status_code == 422, got.text
    assert (
        api.client.get(f"/v1/tenants/{tenant}/documents/a.txt", headers=keys["reader"]).status_code
        == 404
    )


def test_the_console_cannot_be_framed(api: ApiUnderTest) -> None:
    page = api.client.get("/")
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
