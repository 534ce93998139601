"""Documents through the API: put (raw, multipart, async, wait, idempotent), get, list, delete."""

from __future__ import annotations

import pytest
from tests.api.conftest import ApiUnderTest

HANDBOOK = b"# Failover\n\nWhen a node dies its shards fail over to the replicas within seconds."


@pytest.fixture(scope="module")
def keys(api: ApiUnderTest) -> dict[str, dict[str, str]]:
    return api.tenant("docs")


def _search(api: ApiUnderTest, headers: dict[str, str], query: str, **extra: object) -> list[dict]:
    answer = api.client.post(
        "/v1/tenants/docs/search", json={"query": query, **extra}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    hits: list[dict] = answer.json()["hits"]
    return hits


def test_put_answers_202_pending_and_a_session_read_sees_it(
    api: ApiUnderTest, keys: dict[str, dict[str, str]]
) -> None:
    put = api.client.put(
        "/v1/tenants/docs/documents/ops/failover.md", content=HANDBOOK, headers=keys["writer"]
    )
    assert put.status_code == 202
    body = put.json()
    assert body["state"] == "pending" and body["version"] == 1 and body["write_token"]
    hits = _search(
        api,
        keys["reader"],
        "what happens when a node dies",
        read_concern="session",
        write_token=body["write_token"],
    )
    assert hits[0]["doc_id"] == "ops/failover.md" and hits[0]["version"] == 1
    assert {"doc_id", "version", "chunk_index", "text", "score", "metadata"} <= set(hits[0])
    got = api.client.get("/v1/tenants/docs/documents/ops/failover.md", headers=keys["reader"])
    assert got.json()["state"] == "live" and got.json()["chunk_count"] == 1


def test_put_with_wait_answers_200_once_live(
    api: ApiUnderTest, keys: dict[str, dict[str, str]]
) -> None:
    put = api.client.put(
        "/v1/tenants/docs/documents/waited.txt?wait=true",
        content=b"Compaction merges small segments into larger ones overnight.",
        headers=keys["writer"],
    )
    assert put.status_code == 200 and put.json()["state"] == "live"
    assert _search(api, keys["reader"], "segments compaction")[0]["doc_id"] == "waited.txt"


def test_multipart_upload_with_metadata_is_filterable(
    api: ApiUnderTest, keys: dict[str, dict[str, str]]
) -> None:
    put = api.client.put(
        "/v1/tenants/docs/documents/teams/ops-guide?wait=true",
        files={"file": ("guide.md", b"# Pager\n\nThe pager rotates weekly among on-call staff.")},
        data={"metadata": '{"team": "ops", "year": 2026}'},
        headers=keys["writer"],
    )
    assert put.status_code == 200, put.text
    doc = api.client.get("/v1/tenants/docs/documents/teams/ops-guide", headers=keys["reader"])
    assert doc.json()["metadata"] == {"team": "ops", "year": 2026}
    assert doc.json()["filename"] == "guide.md"
    assert _search(api, keys["reader"], "pager rotation", filters={"team": "ops"})
    assert not _search(api, keys["reader"], "pager rotation", filters={"team": "dev"})


def test_strong_read_sees_every_accepted_write(
    api: ApiUnderTest, keys: dict[str, dict[str, str]]
) -> None:
    for i in range(3):
        text = f"Zanzibar spice ledger entry number {i} for the strong read."
        put = api.client.put(
            f"/v1/tenants/docs/documents/ledger/{i}.txt",
            content=text.encode(),
            headers=keys["writer"],
        )
        assert put.status_code in (200, 202)
    hits = _search(api, keys["reader"], "Zanzibar spice ledger", k=10, read_concern="strong")
    assert {h["doc_id"] for h in hits} >= {f"ledger/{i}.txt" for i in range(3)}


def test_idempotency_key_replays_the_first_answer_and_refuses_another_body(
    api: ApiUnderTest, keys: dict[str, dict[str, str]]
) -> None:
    headers = {**keys["writer"], "Idempotency-Key": "upload-42"}
    first = api.client.put(
        "/v1/tenants/docs/documents/idem.txt", content=b"first body", headers=headers
    )
    again = api.client.put(
        "/v1/tenants/docs/documents/idem.txt", content=b"first body", headers=headers
    )
    assert again.status_code == first.status_code and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    other = api.client.put(
        "/v1/tenants/docs/documents/idem.txt", content=b"other body", headers=headers
    )
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    info = api.client.get("/v1/tenants/docs/documents/idem.txt", headers=keys["reader"]).json()
    assert info["latest_version"] == 1  # neither the replay nor the conflict wrote


def test_an_empty_body_is_422_empty_document(
    api: ApiUnderTest, keys: dict[str, dict[str, str]]
) -> None:
    put = api.client.put(
        "/v1/tenants/docs/documents/empty.txt", content=b"", headers=keys["writer"]
    )
    assert put.status_code == 422 and put.json()["error"]["code"] == "empty_document"


@pytest.mark.parametrize(
    "doc_id", ["a/%2E%2E/b.txt", "..%2Fx.txt", "a%00b.txt", "line%0Abreak.txt", "back%5Cslash.txt"]
)
def test_dot_dot_segments_and_control_characters_are_refused(
    api: ApiUnderTest, keys: dict[str, dict[str, str]], doc_id: str
) -> None:
    put = api.client.put(
        f"/v1/tenants/docs/documents/{doc_id}", content=b"text", headers=keys["writer"]
    )
    assert put.status_code == 422 and put.json()["error"]["code"] == "invalid_document_id"


def test_list_is_paginated_and_filterable_by_state(
    api: ApiUnderTest, keys: dict[str, dict[str, str]]
) -> None:
    for name in ("p/1.txt", "p/2.txt", "p/3.txt"):
        api.client.put(
            f"/v1/tenants/docs/documents/{name}?wait=true",
            content=f"page {name}".encode(),
            headers=keys["writer"],
        )
    broken = api.client.put(
        "/v1/tenants/docs/documents/p/broken.pdf?wait=true",
        content=b"%PDF-1.4 garbage",
        headers=keys["writer"],
    )
    assert broken.json()["error"]["code"] == "unparseable_document"  # decided: failed
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = api.client.get(
            "/v1/tenants/docs/documents", params=params, headers=keys["reader"]
        ).json()
        seen += [d["doc_id"] for d in page["documents"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == sorted(seen) and {"p/1.txt", "p/2.txt", "p/3.txt"} <= set(seen)
    failed = api.client.get(
        "/v1/tenants/docs/documents?state=failed", headers=keys["reader"]
    ).json()["documents"]
    assert [d["doc_id"] for d in failed] == ["p/broken.pdf"]
    assert failed[0]["error"]["code"] == "unparseable_document"


def test_delete_removes_the_document_from_search(
    api: ApiUnderTest, keys: dict[str, dict[str, str]]
) -> None:
    api.client.put(
        "/v1/tenants/docs/documents/gone.txt?wait=true",
        content=b"Quokkas are small marsupials.",
        headers=keys["writer"],
    )
    assert _search(api, keys["reader"], "quokka marsupial")[0]["doc_id"] == "gone.txt"
    deleted = api.client.delete("/v1/tenants/docs/documents/gone.txt", headers=keys["writer"])
    assert deleted.status_code == 200 and deleted.json()["state"] == "deleted"
    assert all(h["doc_id"] != "gone.txt" for h in _search(api, keys["reader"], "quokka marsupial"))
    again = api.client.delete("/v1/tenants/docs/documents/gone.txt", headers=keys["writer"])
    assert again.status_code == 404 and again.json()["error"]["code"] == "document_not_found"


def test_an_update_is_served_instead_of_the_cached_old_answer(
    api: ApiUnderTest, keys: dict[str, dict[str, str]]
) -> None:
    url = "/v1/tenants/docs/documents/menu.txt?wait=true"
    api.client.put(
        url, content=b"The canteen serves lentil soup on Mondays.", headers=keys["writer"]
    )
    before = _search(api, keys["reader"], "what does the canteen serve on Mondays")
    assert "lentil" in before[0]["text"]
    assert _search(api, keys["reader"], "what does the canteen serve on Mondays") == before
    api.client.put(
        url, content=b"The canteen serves pumpkin curry on Mondays.", headers=keys["writer"]
    )
    after = _search(api, keys["reader"], "what does the canteen serve on Mondays")
    assert "pumpkin" in after[0]["text"] and after[0]["version"] == 2
