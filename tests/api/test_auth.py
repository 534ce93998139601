"""Keys and roles: bootstrap, tenant keys, revocation, what each role may do, the audit log."""

from __future__ import annotations

from pathlib import Path

from tests.api.conftest import ApiUnderTest, bearer, open_api

from shardrag.api.auth import ApiKeys
from shardrag.registry import Role


def test_root_key_is_generated_once_and_printed_only_on_first_start(tmp_path: Path) -> None:
    first = open_api(tmp_path / "data", admin_key=None)
    try:
        key = first.app.state.bootstrap_key
        assert key and key.startswith("srk_")
        assert first.client.get("/v1/tenants", headers=bearer(key)).status_code == 200
        stored = first.rag.registry.keys(None)
        assert len(stored) == 1 and key.split("_", 2)[2] not in stored[0].secret_hash
    finally:
        first.rag.close()
    again = open_api(tmp_path / "data", admin_key=None)
    try:
        assert again.app.state.bootstrap_key is None
        assert again.client.get("/v1/tenants", headers=bearer(key)).status_code == 200
    finally:
        again.rag.close()


def test_root_creates_tenants_and_keys_shown_once(api: ApiUnderTest) -> None:
    made = api.client.post("/v1/tenants", json={"name": "Zeta Corp"}, headers=api.root)
    assert made.status_code == 201 and made.json()["id"] == "zeta-corp"
    again = api.client.post("/v1/tenants", json={"name": "Zeta Corp"}, headers=api.root)
    assert again.status_code == 409 and again.json()["error"]["code"] == "tenant_exists"
    key = api.client.post("/v1/tenants/zeta-corp/keys", json={"role": "reader"}, headers=api.root)
    assert key.status_code == 201
    body = key.json()
    assert body["role"] == "reader" and body["key"].startswith(f"srk_{body['id']}_")
    listed = api.client.get("/v1/tenants/zeta-corp/keys", headers=api.root).json()["keys"]
    assert [k["id"] for k in listed] == [body["id"]]
    assert "key" not in listed[0] and body["key"] not in str(listed)
    me = api.client.get("/v1/whoami", headers=bearer(body["key"])).json()
    assert me == {"key_id": body["id"], "tenant": "zeta-corp", "role": "reader", "groups": None}


def test_missing_malformed_and_unknown_keys_are_401(api: ApiUnderTest) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, bearer("srk_nope_nope"), bearer("x")):
        answer = api.client.get("/v1/whoami", headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unauthorized"


def test_a_revoked_key_stops_working_at_once(api: ApiUnderTest) -> None:
    keys = api.tenant("revoking")
    writer_id = api.client.get("/v1/whoami", headers=keys["writer"]).json()["key_id"]
    revoked = api.client.delete(f"/v1/tenants/revoking/keys/{writer_id}", headers=keys["admin"])
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    answer = api.client.post(
        "/v1/tenants/revoking/search", json={"query": "anything"}, headers=keys["writer"]
    )
    assert answer.status_code == 401
    assert "revoked" in answer.json()["error"]["message"]


def test_readers_cannot_write_and_writers_cannot_manage_keys(api: ApiUnderTest) -> None:
    keys = api.tenant("roles")
    put = api.client.put(
        "/v1/tenants/roles/documents/a.txt?wait=true", content=b"text", headers=keys["reader"]
    )
    assert put.status_code == 403 and put.json()["error"]["code"] == "forbidden"
    delete = api.client.delete("/v1/tenants/roles/documents/a.txt", headers=keys["reader"])
    assert delete.status_code == 403
    for method, path in (
        ("POST", "/v1/tenants/roles/keys"),
        ("GET", "/v1/tenants/roles/keys"),
        ("GET", "/v1/tenants/roles/audit"),
    ):
        answer = api.client.request(method, path, json={"role": "admin"}, headers=keys["writer"])
        assert answer.status_code == 403, (method, path)
    assert api.client.get("/v1/tenants/roles/audit", headers=keys["admin"]).status_code == 200
    # Writers write; tenant keys never manage tenants.
    ok = api.client.put(
        "/v1/tenants/roles/documents/a.txt?wait=true", content=b"text", headers=keys["writer"]
    )
    assert ok.status_code == 200
    assert (
        api.client.post("/v1/tenants", json={"name": "x"}, headers=keys["admin"]).status_code == 403
    )


def test_the_root_key_manages_but_never_reads_documents(api: ApiUnderTest) -> None:
    keys = api.tenant("rootless")
    api.client.put(
        "/v1/tenants/rootless/documents/s.txt?wait=true", content=b"secret", headers=keys["writer"]
    )
    for method, path in (
        ("GET", "/v1/tenants/rootless/documents"),
        ("GET", "/v1/tenants/rootless/documents/s.txt"),
        ("POST", "/v1/tenants/rootless/search"),
    ):
        answer = api.client.request(method, path, json={"query": "secret"}, headers=api.root)
        assert answer.status_code == 403, (method, path)
        assert "secret" not in answer.text.replace("forbidden", "")


def test_every_write_and_admin_action_is_audited_with_its_outcome(api: ApiUnderTest) -> None:
    keys = api.tenant("audited")
    api.client.put(
        "/v1/tenants/audited/documents/a.md?wait=true",
        content=b"# A\n\nalpha",
        headers=keys["writer"],
    )
    api.client.put("/v1/tenants/audited/documents/empty.md", content=b"", headers=keys["writer"])
    api.client.put("/v1/tenants/audited/documents/b.md", content=b"b", headers=keys["reader"])
    api.client.delete("/v1/tenants/audited/documents/a.md", headers=keys["writer"])
    events = api.client.get("/v1/tenants/audited/audit", headers=keys["admin"]).json()["events"]
    seen = [(e["action"], e["target"], e["outcome"]) for e in reversed(events)]
    assert seen == [
        ("tenant.create", "audited", "ok"),
        ("key.create", "admin", "ok"),
        ("key.create", "writer", "ok"),
        ("key.create", "reader", "ok"),
        ("document.put", "a.md", "ok"),
        ("document.put", "empty.md", "empty_document"),
        ("document.write", "/v1/tenants/audited/documents/b.md", "forbidden"),
        ("document.delete", "a.md", "ok"),
    ]
    assert all(e["actor"].startswith("key:") and e["at"] > 0 for e in events)
    page = api.client.get("/v1/tenants/audited/audit?limit=3", headers=keys["admin"]).json()
    older = api.client.get(
        f"/v1/tenants/audited/audit?limit=100&before={page['next_before']}", headers=keys["admin"]
    ).json()
    assert [e["id"] for e in page["events"] + older["events"]] == [e["id"] for e in events]


def test_roles_include_lower_roles_and_root_stands_apart() -> None:
    assert Role.ADMIN.may(Role.WRITER) and Role.WRITER.may(Role.READER)
    assert not Role.READER.may(Role.WRITER) and not Role.WRITER.may(Role.ADMIN)
    assert not Role.ROOT.may(Role.READER) and not Role.ADMIN.may(Role.ROOT)


def test_keys_are_stored_only_as_hashes(api: ApiUnderTest) -> None:
    api.tenant("hashed")
    secret = api.key("hashed", "reader")
    key_id = secret.split("_", 2)[1]
    record = api.rag.registry.key(key_id)
    assert record is not None and secret not in record.secret_hash
    assert ApiKeys(api.rag.registry, None).authenticate(f"Bearer {secret}").tenant == "hashed"
