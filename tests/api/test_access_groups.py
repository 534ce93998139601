"""Access groups inside a tenant: every read path, every combination of key groups and
narrowing, in this process and (``cluster/test_api_suite.py``) through a cluster's router.

The corpus: per group, documents that match the same query; plus public documents. A caller
must never see a hit, a citation, a cached answer, a listing or a document outside its
groups, and still gets k hits when enough readable documents exist.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from tests.api.conftest import ApiUnderTest, bearer

TENANT = "acl-corp"
GROUPS = ("eng", "hr", "legal")
#: Documents per group (and public ones): each mentions the shared query's words.
PER_GROUP = 4
QUERY = "quarterly kayak budget review"


def _doc(group: str | None, i: int) -> tuple[str, bytes]:
    owner = group or "public"
    text = (
        f"The {owner} team's quarterly kayak budget review number {i}. "
        f"Only the {owner} readers should find the {owner} plan {i} for kayaks and budgets."
    )
    return f"{owner}/plan-{i}.txt", text.encode()


def _owner(doc_id: str) -> str:
    return doc_id.split("/", 1)[0]


@pytest.fixture(scope="module")
def corpus(api: ApiUnderTest) -> dict[str, Any]:
    keys = api.tenant(TENANT)
    writer = keys["writer"]
    for group, i in itertools.product((*GROUPS, None), range(PER_GROUP)):
        doc_id, body = _doc(group, i)
        headers = {**writer, "Content-Type": "text/plain"}
        if group is not None:
            headers["X-Shardrag-Acl"] = group
        put = api.client.put(
            f"/v1/tenants/{TENANT}/documents/{doc_id}",
            content=body,
            params={"wait": "true"},
            headers=headers,
        )
        assert put.status_code == 200, put.text
    # One document of two groups, written as multipart with an ``acl`` part.
    shared = api.client.put(
        f"/v1/tenants/{TENANT}/documents/eng+hr/plan.txt",
        files={"file": ("plan.txt", b"The eng and hr quarterly kayak budget review, shared.")},
        data={"acl": json.dumps(["eng", "hr"])},
        params={"wait": "true"},
        headers=writer,
    )
    assert shared.status_code == 200, shared.text
    readers = {None: keys["reader"]}
    for size in (1, 2):
        for combo in itertools.combinations(GROUPS, size):
            made = api.client.post(
                f"/v1/tenants/{TENANT}/keys",
                json={"role": "reader", "groups": list(combo)},
                headers=keys["admin"],
            )
            assert made.status_code == 201, made.text
            assert made.json()["groups"] == sorted(combo)
            readers[combo] = bearer(made.json()["key"])
    return {"keys": keys, "readers": readers}


def _allowed(doc_id: str, effective: tuple[str, ...] | None) -> bool:
    owner = _owner(doc_id)
    if effective is None or owner == "public":
        return True
    return bool(set(owner.split("+")) & set(effective))


def _effective(key: tuple[str, ...] | None, narrow: tuple[str, ...] | None) -> Any:
    if narrow is None:
        return key
    return tuple(g for g in narrow if key is None or g in key)


NARROWINGS: list[tuple[str, ...] | None] = [None, (), ("eng",), ("hr", "legal"), ("eng", "hr")]


def test_every_read_path_stays_inside_the_callers_groups(
    api: ApiUnderTest, corpus: dict[str, Any]
) -> None:
    total_public = PER_GROUP
    for (key_groups, headers), narrow in itertools.product(corpus["readers"].items(), NARROWINGS):
        effective = _effective(key_groups, narrow)
        sent = dict(headers)
        if narrow is not None:
            sent["X-Shardrag-Groups"] = ",".join(narrow)
        case = f"key {key_groups}, narrowed to {narrow}"
        readable = sum(
            _allowed(_doc(g, 0)[0], effective) for g in (*GROUPS, None)
        ) * PER_GROUP + _allowed("eng+hr/plan.txt", effective)
        for mode in ("hybrid", "dense", "keyword"):
            for _ in range(2):  # the second is answered from the result cache
                found = api.client.post(
                    f"/v1/tenants/{TENANT}/search",
                    json={"query": QUERY, "k": 10, "mode": mode},
                    headers=sent,
                )
                assert found.status_code == 200, found.text
                ids = [h["doc_id"] for h in found.json()["hits"]]
                assert all(_allowed(d, effective) for d in ids), (case, mode, ids)
                assert len(ids) == min(10, readable), (case, mode, ids)
        answered = api.client.post(
            f"/v1/tenants/{TENANT}/answer", json={"question": QUERY, "k": 8}, headers=sent
        )
        assert answered.status_code == 200, answered.text
        body = answered.json()
        cited = [c["doc_id"] for c in body["citations"]] + [h["doc_id"] for h in body["hits"]]
        assert cited and all(_allowed(d, effective) for d in cited), (case, cited)
        streamed = api.client.post(
            f"/v1/tenants/{TENANT}/answer",
            json={"question": QUERY, "k": 8, "stream": True},
            headers=sent,
        )
        assert streamed.status_code == 200, streamed.text
        for line in streamed.text.splitlines():
            if line.startswith("data: "):
                for doc_id in _doc_ids(json.loads(line[6:])):
                    assert _allowed(doc_id, effective), (case, doc_id)
        listed = api.client.get(f"/v1/tenants/{TENANT}/documents", headers=sent)
        assert listed.status_code == 200, listed.text
        listed_ids = [d["doc_id"] for d in listed.json()["documents"]]
        assert len(listed_ids) == readable and all(_allowed(d, effective) for d in listed_ids)
        assert total_public <= readable
        for group in (*GROUPS, None):
            doc_id = _doc(group, 0)[0]
            got = api.client.get(f"/v1/tenants/{TENANT}/documents/{doc_id}", headers=sent)
            assert got.status_code == (200 if _allowed(doc_id, effective) else 404), (case, doc_id)
            original = api.client.get(f"/v1/tenants/{TENANT}/originals/{doc_id}", headers=sent)
            if _allowed(doc_id, effective):
                assert original.content == _doc(None if group is None else group, 0)[1]
                assert original.headers["content-disposition"] == "attachment"
            else:
                assert original.status_code == 404 and b"kayak" not in original.content


def _doc_ids(value: Any) -> list[str]:
    """Every ``doc_id`` anywhere in a JSON value."""
    if isinstance(value, dict):
        own = [value["doc_id"]] if isinstance(value.get("doc_id"), str) else []
        return own + [d for v in value.values() for d in _doc_ids(v)]
    if isinstance(value, list):
        return [d for v in value for d in _doc_ids(v)]
    return []


def test_a_document_shows_its_groups_and_a_change_of_groups_is_a_new_version(
    api: ApiUnderTest, corpus: dict[str, Any]
) -> None:
    writer = corpus["keys"]["writer"]
    path = f"/v1/tenants/{TENANT}/documents/moving.txt"
    body = b"A kayak budget memo that moves from legal to hr."
    first = api.client.put(
        path,
        content=body,
        params={"wait": "true"},
        headers={**writer, "X-Shardrag-Acl": "legal"},
    )
    assert first.status_code == 200, first.text
    again = api.client.put(
        path, content=body, params={"wait": "true"}, headers={**writer, "X-Shardrag-Acl": "legal"}
    )
    assert again.json()["unchanged"] is True
    moved = api.client.put(
        path, content=body, params={"wait": "true"}, headers={**writer, "X-Shardrag-Acl": "hr"}
    )
    assert moved.status_code == 200 and moved.json()["version"] == first.json()["version"] + 1
    shown = api.client.get(path, headers=writer).json()
    assert shown["acl"] == ["hr"] and "@acl" not in shown["metadata"]
    legal = corpus["readers"][("legal",)]
    hr = corpus["readers"][("hr",)]
    query = {"query": "kayak budget memo moves from legal to hr", "k": 50}
    for reader, visible in ((legal, False), (hr, True)):
        found = api.client.post(f"/v1/tenants/{TENANT}/search", json=query, headers=reader)
        assert ("moving.txt" in [h["doc_id"] for h in found.json()["hits"]]) is visible


def test_groups_are_validated_and_never_widened(api: ApiUnderTest, corpus: dict[str, Any]) -> None:
    keys = corpus["keys"]
    bad = api.client.post(
        f"/v1/tenants/{TENANT}/search",
        json={"query": QUERY},
        headers={**keys["reader"], "X-Shardrag-Groups": "eng,bad group!"},
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_parameter"
    bad_acl = api.client.put(
        f"/v1/tenants/{TENANT}/documents/x.txt",
        content=b"text",
        headers={**keys["writer"], "X-Shardrag-Acl": "*"},
    )
    assert bad_acl.status_code == 422 and bad_acl.json()["error"]["code"] == "invalid_parameter"
    # A legal-only key asking for eng sees public documents only.
    legal = corpus["readers"][("legal",)]
    found = api.client.post(
        f"/v1/tenants/{TENANT}/search",
        json={"query": QUERY, "k": 50},
        headers={**legal, "X-Shardrag-Groups": "eng"},
    )
    assert {_owner(h["doc_id"]) for h in found.json()["hits"]} == {"public"}
    whoami = api.client.get("/v1/whoami", headers=legal).json()
    assert whoami["groups"] == ["legal"]


def test_a_writer_with_groups_writes_only_inside_them(
    api: ApiUnderTest, corpus: dict[str, Any]
) -> None:
    made = api.client.post(
        f"/v1/tenants/{TENANT}/keys",
        json={"role": "writer", "groups": ["eng"]},
        headers=corpus["keys"]["admin"],
    )
    eng_writer = bearer(made.json()["key"])
    base = f"/v1/tenants/{TENANT}/documents"
    outside = api.client.put(
        f"{base}/eng-new.txt", content=b"x y z", headers={**eng_writer, "X-Shardrag-Acl": "hr"}
    )
    assert outside.status_code == 403
    public = api.client.put(f"{base}/eng-new.txt", content=b"x y z", headers=eng_writer)
    assert public.status_code == 403
    hidden = api.client.delete(f"{base}/{_doc('hr', 0)[0]}", headers=eng_writer)
    assert hidden.status_code == 404
    still = api.client.get(f"{base}/{_doc('hr', 0)[0]}", headers=corpus["keys"]["reader"])
    assert still.json()["state"] == "live"
    inside = api.client.put(
        f"{base}/eng-new.txt",
        content=b"an eng note",
        params={"wait": "true"},
        headers={**eng_writer, "X-Shardrag-Acl": "eng"},
    )
    assert inside.status_code == 200, inside.text
