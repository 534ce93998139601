"""Bad input through the API: a 4xx with a stable code, one error shape, and nothing lost.

The embedded core's bad-input corpus (tests/embedded/test_isolation_and_input.py) sent over HTTP,
plus what only HTTP has: malformed JSON, schema violations, path tricks, bad headers, bodies
over the size limits. Every answer is ``{"error": {"code", "message", "details"}}`` with the
expected status and code; afterwards the server still answers and the document stored before
(``keeper.txt``, which most bad writes try to replace) is live, unchanged and searchable.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from tests.api.conftest import ApiUnderTest, LiveServer, bearer, open_api

TENANT = "bad"
KEEPER = "keeper.txt"
KEEPER_TEXT = b"Shards are replicated to three nodes; replicas apply the log in order."
KEEPER_QUERY = "how are shards replicated"
DOCS = f"/v1/tenants/{TENANT}/documents"
KEEPER_URL = f"{DOCS}/{KEEPER}"
SEARCH = f"/v1/tenants/{TENANT}/search"
ANSWER = f"/v1/tenants/{TENANT}/answer"

Keys = dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def keys(api: ApiUnderTest) -> Keys:
    return api.tenant(TENANT)


@pytest.fixture(scope="module")
def keeper(api: ApiUnderTest, keys: Keys) -> int:
    """The version of the document stored before any bad input arrives."""
    put = api.client.put(
        KEEPER_URL, params={"wait": "true"}, content=KEEPER_TEXT, headers=keys["writer"]
    )
    assert put.status_code == 200 and put.json()["state"] == "live", put.text
    version: int = put.json()["version"]
    return version


def assert_error(answer: Any, status: int, code: str) -> dict[str, Any]:
    """``answer`` is the one error shape with ``status`` and ``code``; its error object."""
    assert (answer.status_code, _code(answer)) == (status, code), answer.text[:500]
    assert answer.headers["content-type"] == "application/json"
    assert len(answer.headers.get_list("x-trace-id")) == 1, answer.headers  # one trace id
    body = answer.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    return error


def _code(answer: Any) -> str | None:
    try:
        return str(answer.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def assert_still_serving(api: ApiUnderTest, keys: Keys, version: int) -> None:
    """The server answers, and the keeper is live at ``version`` and found by a search."""
    assert api.client.get("/healthz").json()["status"] == "ok"
    doc = api.client.get(KEEPER_URL, headers=keys["reader"])
    assert doc.status_code == 200, doc.text
    assert (doc.json()["state"], doc.json()["version"]) == ("live", version), doc.text
    # A refused write may be recorded as a failed later attempt; the live version stays.
    assert doc.json()["latest_state"] in ("live", "failed"), doc.text
    hits = api.client.post(SEARCH, json={"query": KEEPER_QUERY, "k": 1}, headers=keys["reader"])
    assert hits.status_code == 200, hits.text
    assert [(h["doc_id"], h["version"]) for h in hits.json()["hits"]] == [(KEEPER, version)]


# --- Documents: the embedded core's corpus ---------------------------------------------------

BROKEN_PDF = b"%PDF-1.7\n1 0 obj <<>> broken"
SCRIPT_ONLY_HTML = b"<html><script>var x=1;</script><nav>menu</nav></html>"


@pytest.mark.parametrize("upload", ["raw-body", "multipart"])
@pytest.mark.parametrize(
    ("data", "filename", "status", "code"),
    [
        pytest.param(b"", None, 422, "empty_document", id="empty-body"),
        pytest.param(b"   \n\t  \n", None, 422, "empty_document", id="blank-text"),
        pytest.param(bytes(range(256)) * 64, None, 422, "binary_content", id="binary-garbage"),
        pytest.param(
            "Replica façade".encode("utf-16-le"), None, 422, "binary_content", id="utf16-no-bom"
        ),
        pytest.param(BROKEN_PDF, "broken.pdf", 422, "unparseable_document", id="broken-pdf"),
        pytest.param(b"MZ\x90\x00\x03\x00", "program.exe", 415, "unsupported_format", id="exe"),
        pytest.param(b"PK\x03\x04zip", "archive.zip", 415, "unsupported_format", id="zip"),
        pytest.param(SCRIPT_ONLY_HTML, "empty.html", 422, "empty_document", id="html-no-text"),
    ],
)
def test_a_bad_document_is_refused_and_the_live_version_stays(
    api: ApiUnderTest,
    keys: Keys,
    keeper: int,
    upload: str,
    data: bytes,
    filename: str | None,
    status: int,
    code: str,
) -> None:
    if upload == "raw-body":
        params = {"filename": filename} if filename else {}
        answer = api.client.put(KEEPER_URL, params=params, content=data, headers=keys["writer"])
    else:
        files = {"file": (filename or KEEPER, data, "application/octet-stream")}
        answer = api.client.put(KEEPER_URL, files=files, headers=keys["writer"])
    if data and code in PARSED_LATER and answer.status_code != 202:
        # These bytes failed for what they are in the previous case (the other upload form):
        # the failed version is the answer at once, and no new version is made.
        error = assert_error(answer, status, code)
        assert error["details"]["unchanged"] is True, error
    elif data and code in PARSED_LATER:
        # Only the ingestion worker parses: the write is accepted, then its version fails
        # with the reason (docs/api.md), and the keeper stays live throughout.
        assert answer.status_code == 202, answer.text
        version = answer.json()["version"]
        latest = _settled(api, keys, version)
        assert (latest["latest_version"], latest["latest_state"]) == (version, "failed"), latest
        assert latest["error"]["code"] == code, latest
    else:
        error = assert_error(answer, status, code)
        if code == "unsupported_format":
            assert error["details"]["extension"] == "." + str(filename).rsplit(".", 1)[-1]
    assert_still_serving(api, keys, keeper)


# Refusals that need the document parsed: the ingestion worker's, after the 202.
PARSED_LATER = {"empty_document", "binary_content", "unparseable_document"}


def _settled(api: ApiUnderTest, keys: Keys, version: int) -> dict[str, Any]:
    """The keeper's record once ``version`` is no longer pending."""
    deadline = time.monotonic() + 60
    while True:
        latest: dict[str, Any] = api.client.get(KEEPER_URL, headers=keys["reader"]).json()
        if latest["latest_version"] != version or latest["latest_state"] != "pending":
            return latest
        assert time.monotonic() < deadline, latest
        time.sleep(0.05)


def test_a_refused_write_with_wait_is_refused_at_once_too(
    api: ApiUnderTest, keys: Keys, keeper: int
) -> None:
    answer = api.client.put(
        KEEPER_URL,
        params={"wait": "true", "filename": "broken.pdf"},
        content=BROKEN_PDF,
        headers=keys["writer"],
    )
    assert_error(answer, 422, "unparseable_document")
    assert_still_serving(api, keys, keeper)


@pytest.mark.parametrize(
    ("doc_id", "data", "query", "expected"),
    [
        pytest.param(
            "cp1252.txt",
            "Café résumé: the naïve replica façade.".encode("cp1252"),
            "café façade",
            "Café résumé",
            id="cp1252",
        ),
        pytest.param(
            "utf16.txt",
            "The lighthouse keeper logs every façade inspection.".encode("utf-16"),
            "lighthouse keeper façade",
            "lighthouse keeper",
            id="utf16-with-bom",
        ),
        pytest.param(
            "broken-utf8.txt",
            b"Quarterly tide tables \xff\xfe\xc3\x28 for the northern harbour.",
            "tide tables northern harbour",
            "tide tables",
            id="invalid-utf8-bytes",
        ),
    ],
)
def test_text_in_a_wrong_encoding_is_decoded_not_refused(
    api: ApiUnderTest, keys: Keys, keeper: int, doc_id: str, data: bytes, query: str, expected: str
) -> None:
    put = api.client.put(
        f"{DOCS}/{doc_id}",
        params={"wait": "true"},
        content=data,
        headers={**keys["writer"], "Content-Type": "text/plain; charset=utf-8"},
    )
    assert put.status_code == 200 and put.json()["state"] == "live", put.text
    hits = api.client.post(SEARCH, json={"query": query, "k": 3}, headers=keys["reader"])
    texts = [h["text"] for h in hits.json()["hits"] if h["doc_id"] == doc_id]
    assert texts and expected in texts[0]
    assert_still_serving(api, keys, keeper)


# --- Document ids: path tricks ---------------------------------------------------------------

# As the client sends them (percent-encoded where a client would otherwise normalise them away).
BAD_DOC_IDS = [
    pytest.param("a/%2e%2e/b", id="encoded-dot-dot"),
    pytest.param("%2e%2e/%2e%2e/etc/passwd", id="encoded-dot-dot-at-start"),
    pytest.param("a/%2e/b", id="encoded-dot"),
    pytest.param("a%2F..%2Fb", id="encoded-slashes-and-dot-dot"),
    pytest.param("/abs", id="leading-slash"),
    pytest.param("%2Fabs", id="encoded-leading-slash"),
    pytest.param("a%5Cb", id="encoded-backslash"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("..%5C..%5Cwin.ini", id="backslash-dot-dot"),
    pytest.param("nul%00", id="nul"),
    pytest.param("a%0Ab", id="line-feed-inside"),
    pytest.param("line-feed%0A", id="line-feed-at-end"),
    pytest.param("cr%0Dx", id="carriage-return"),
    pytest.param("tab%09x", id="tab"),
    pytest.param("%E2%80%8Bzero-width", id="zero-width-space"),
    pytest.param("a//b", id="empty-segment"),
    pytest.param("trailing/", id="trailing-slash"),
    pytest.param("", id="empty"),
    pytest.param("x" * 513, id="513-characters"),
]


@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
@pytest.mark.parametrize("doc_id", BAD_DOC_IDS)
def test_path_tricks_in_document_ids_are_refused(
    api: ApiUnderTest, keys: Keys, keeper: int, method: str, doc_id: str
) -> None:
    answer = api.client.request(
        method,
        f"{DOCS}/{doc_id}",
        content=KEEPER_TEXT if method == "PUT" else None,
        headers=keys["writer"],
    )
    assert_error(answer, 422, "invalid_document_id")
    assert_still_serving(api, keys, keeper)


def test_a_client_resolves_dot_segments_before_sending(api: ApiUnderTest, keys: Keys) -> None:
    """httpx (like browsers and curl without --path-as-is) sends ``a/../b`` as ``b``: the
    server never sees the dots; the raw path is tested against a real socket below."""
    answer = api.client.put(f"{DOCS}/a/../dots.txt", content=b"dot dot", headers=keys["writer"])
    assert answer.status_code == 202 and answer.json()["doc_id"] == "dots.txt"


@pytest.fixture(scope="module")
def live_writer(live_server: LiveServer) -> str:
    """A writer key of tenant ``raw`` on the live server."""
    root = bearer(live_server.admin_key)
    made = httpx.post(
        f"{live_server.url}/v1/tenants", json={"id": "raw", "name": "Raw"}, headers=root
    )
    assert made.status_code == 201, made.text
    key = httpx.post(
        f"{live_server.url}/v1/tenants/raw/keys", json={"role": "writer"}, headers=root
    )
    assert key.status_code == 201, key.text
    secret: str = key.json()["key"]
    return secret


@pytest.mark.parametrize(
    ("raw_path", "status", "code"),
    [
        pytest.param("/v1/tenants/raw/documents/a/../b", 422, "invalid_document_id", id="a/../b"),
        pytest.param(
            "/v1/tenants/raw/documents/../../../etc/passwd",
            422,
            "invalid_document_id",
            id="../../../etc/passwd",
        ),
        pytest.param("/v1/tenants/raw/documents/./x", 422, "invalid_document_id", id="./x"),
        pytest.param("/v1/tenants/raw/documents/a/..", 422, "invalid_document_id", id="a/.."),
        pytest.param(
            "/v1/tenants/raw/../raw/documents/x", 404, "route_not_found", id="dot-dot-in-tenant"
        ),
    ],
)
def test_raw_dot_segments_sent_as_is_over_a_socket_are_refused(
    live_server: LiveServer, live_writer: str, raw_path: str, status: int, code: str
) -> None:
    """What ``curl --path-as-is`` sends: uvicorn passes the path on without resolving it."""
    address = urlsplit(live_server.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
    try:
        connection.request("PUT", raw_path, body=b"raw body", headers=bearer(live_writer))
        answer = connection.getresponse()
        body = json.loads(answer.read())
    finally:
        connection.close()
    assert (answer.status, body["error"]["code"]) == (status, code), body
    assert set(body["error"]) == {"code", "message", "details"}
    listed = httpx.get(f"{live_server.url}/v1/tenants/raw/documents", headers=bearer(live_writer))
    assert listed.json()["documents"] == []  # nothing was written under any name


# --- Metadata and other parameters of a write ------------------------------------------------


@pytest.mark.parametrize(
    ("request_kwargs", "code"),
    [
        pytest.param({"params": {"metadata": "{bad"}}, "invalid_parameter", id="not-json"),
        pytest.param({"params": {"metadata": "[1, 2]"}}, "invalid_parameter", id="json-array"),
        pytest.param({"params": {"metadata": '"text"'}}, "invalid_parameter", id="json-string"),
        pytest.param({"params": {"metadata": "42"}}, "invalid_parameter", id="json-number"),
        pytest.param({"params": {"metadata": '{"": 1}'}}, "invalid_parameter", id="empty-key"),
        pytest.param({"params": {"metadata": '{"a.b": 1}'}}, "invalid_parameter", id="dotted-key"),
        pytest.param(
            {"files": {"file": (KEEPER, KEEPER_TEXT), "metadata": (None, "[1]")}},
            "invalid_parameter",
            id="multipart-metadata-array",
        ),
        pytest.param(
            {"files": {"file": (KEEPER, KEEPER_TEXT), "metadata": (None, "{oops")}},
            "invalid_parameter",
            id="multipart-metadata-not-json",
        ),
        pytest.param(
            {
                "files": {
                    "file": (KEEPER, KEEPER_TEXT),
                    "metadata": (None, json.dumps({"big": "x" * 70_000})),
                }
            },
            "invalid_parameter",
            id="metadata-over-64-kib",
        ),
        pytest.param(
            {"files": {"file": (KEEPER, KEEPER_TEXT), "metadata": ("m.json", b"{}")}},
            "invalid_request",
            id="multipart-metadata-as-file",
        ),
        pytest.param(
            {"files": {"metadata": (None, "{}")}}, "invalid_request", id="multipart-without-file"
        ),
        pytest.param(
            {"files": [("file", ("a.txt", b"one")), ("file", ("b.txt", b"two"))]},
            "invalid_request",
            id="multipart-two-files",
        ),
        pytest.param(
            {"content": b"--xx\r\nbroken", "headers": {"Content-Type": "multipart/form-data"}},
            "invalid_request",
            id="multipart-without-boundary",
        ),
        pytest.param({"params": {"wait": "maybe"}}, "invalid_request", id="wait-not-boolean"),
        pytest.param({"params": {"title": "t" * 1001}}, "invalid_request", id="title-too-long"),
        pytest.param(
            {"params": {"filename": "f" * 256}}, "invalid_request", id="filename-too-long"
        ),
        pytest.param(
            {"headers": {"Idempotency-Key": "k" * 256}},
            "invalid_request",
            id="idempotency-key-long",
        ),
    ],
)
def test_bad_write_parameters_are_refused_before_anything_is_written(
    api: ApiUnderTest, keys: Keys, keeper: int, request_kwargs: dict[str, Any], code: str
) -> None:
    kwargs = {"content": b"A new text that must never replace the keeper.", **request_kwargs}
    if "files" in kwargs:
        del kwargs["content"]
    kwargs["headers"] = {**keys["writer"], **kwargs.get("headers", {})}
    assert_error(api.client.put(KEEPER_URL, **kwargs), 422, code)
    assert_still_serving(api, keys, keeper)


# --- Search and answer bodies ----------------------------------------------------------------


def _json_body(value: Any) -> dict[str, Any]:
    return {"content": json.dumps(value).encode(), "headers": {"Content-Type": "application/json"}}


def _raw_body(data: bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": data, "headers": {"Content-Type": content_type}}


SEARCH_CASES = [
    pytest.param(_raw_body(b"{bad"), 400, "malformed_json", id="malformed-json"),
    pytest.param(_raw_body(b'{"query": "x"'), 400, "malformed_json", id="truncated-json"),
    pytest.param(_raw_body(b'{"query": "\xff\xfe"}'), 400, "malformed_json", id="invalid-utf8"),
    pytest.param(_raw_body(b"[" * 100_000), 400, "malformed_json", id="nested-100000-deep"),
    pytest.param(_raw_body(b""), 422, "invalid_request", id="empty-body"),
    pytest.param(_json_body([1, 2]), 422, "invalid_request", id="array-body"),
    pytest.param(_json_body("query"), 422, "invalid_request", id="string-body"),
    pytest.param(
        _raw_body(b'{"query": "x"}', "text/plain"), 422, "invalid_request", id="not-json-type"
    ),
    pytest.param(_json_body({"query": "x", "bogus": 1}), 422, "invalid_request", id="unknown"),
    pytest.param(_json_body({"querry": "x"}), 422, "invalid_request", id="misspelt-field"),
    pytest.param(_json_body({"query": "x", "k": 10**30}), 422, "invalid_request", id="huge-k"),
    pytest.param(_json_body({"query": "x", "k": 1001}), 422, "invalid_request", id="k-over-max"),
    pytest.param(_json_body({"query": "x", "k": 0}), 422, "invalid_request", id="zero-k"),
    pytest.param(_json_body({"query": "x", "k": -5}), 422, "invalid_request", id="negative-k"),
    pytest.param(_json_body({"query": "x", "k": "ten"}), 422, "invalid_request", id="k-string"),
    pytest.param(_json_body({"query": "x", "k": 2.5}), 422, "invalid_request", id="k-fraction"),
    pytest.param(_json_body({"query": "x", "k": None}), 422, "invalid_request", id="k-null"),
    pytest.param(_raw_body(b'{"query": "x", "k": 1e400}'), 422, "invalid_request", id="k-inf"),
    pytest.param(_raw_body(b'{"query": "x", "k": NaN}'), 422, "invalid_request", id="k-nan"),
    pytest.param(_json_body({"query": "   "}), 422, "empty_query", id="blank-query"),
    pytest.param(_json_body({"query": ""}), 422, "invalid_request", id="empty-query"),
    pytest.param(_json_body({"query": None}), 422, "invalid_request", id="null-query"),
    pytest.param(_json_body({"query": 42}), 422, "invalid_request", id="number-query"),
    pytest.param(_json_body({"query": "x" * 5000}), 422, "invalid_request", id="long-query"),
    pytest.param(_json_body({"query": "x", "mode": "fuzzy"}), 422, "invalid_request", id="mode"),
    pytest.param(_json_body({"query": "x", "fusion": "max"}), 422, "invalid_request", id="fusion"),
    pytest.param(
        _json_body({"query": "x", "read_concern": "linearizable"}),
        422,
        "invalid_request",
        id="read-concern",
    ),
    pytest.param(
        _json_body({"query": "x", "read_concern": "session"}),
        422,
        "invalid_parameter",
        id="session-without-token",
    ),
    pytest.param(
        _json_body({"query": "x", "read_concern": "session", "write_token": "garbage"}),
        422,
        "invalid_parameter",
        id="session-garbage-token",
    ),
    pytest.param(
        _json_body({"query": "x", "read_concern": "session", "write_token": "wt1.e30"}),
        422,
        "invalid_parameter",
        id="session-empty-token",
    ),
    pytest.param(
        _json_body({"query": "x", "write_token": "w" * 3000}),
        422,
        "invalid_request",
        id="token-too-long",
    ),
    pytest.param(_json_body({"query": "x", "filters": []}), 422, "invalid_request", id="f-list"),
    pytest.param(
        _json_body({"query": "x", "filters": {"a": {"b": 1}}}),
        422,
        "invalid_parameter",
        id="filter-nested-object",
    ),
    pytest.param(
        _json_body({"query": "x", "filters": {"a": []}}), 422, "invalid_parameter", id="f-empty"
    ),
    pytest.param(
        _json_body({"query": "x", "filters": {"a": [1, "x"]}}),
        422,
        "invalid_parameter",
        id="filter-mixed-list",
    ),
    pytest.param(
        _json_body({"query": "x", "filters": {"a": None}}), 422, "invalid_parameter", id="f-null"
    ),
    pytest.param(
        _json_body({"query": "x", "filters": {"": 1}}), 422, "invalid_parameter", id="f-empty-key"
    ),
    pytest.param(
        _json_body({"query": "x", "filters": {"a.b": 1}}),
        422,
        "invalid_parameter",
        id="filter-dotted-key",
    ),
    pytest.param(
        _json_body({"query": "x", "filters": {"n": 2**63}}),
        422,
        "invalid_parameter",
        id="filter-int-over-int64",
    ),
    pytest.param(
        _json_body({"query": "x", "filters": {"n": [10**30]}}),
        422,
        "invalid_parameter",
        id="filter-list-int-over-int64",
    ),
]


@pytest.mark.parametrize(("request_kwargs", "status", "code"), SEARCH_CASES)
def test_a_bad_search_body_gets_a_4xx_with_a_stable_code(
    api: ApiUnderTest,
    keys: Keys,
    keeper: int,
    request_kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    headers = {**keys["reader"], **request_kwargs.get("headers", {})}
    answer = api.client.post(SEARCH, content=request_kwargs["content"], headers=headers)
    assert_error(answer, status, code)
    assert_still_serving(api, keys, keeper)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"question": ""}, "invalid_request", id="empty-question"),
        pytest.param({"question": "  "}, "empty_query", id="blank-question"),
        pytest.param({"query": "x"}, "invalid_request", id="search-field-name"),
        pytest.param({"question": "x", "k": 101}, "invalid_request", id="k-over-100"),
        pytest.param({"question": "x", "max_context_tokens": 0}, "invalid_request", id="budget-0"),
        pytest.param({"question": "x", "stream": "maybe"}, "invalid_request", id="stream-string"),
        pytest.param(
            {"question": "x", "filters": {"a": {"b": 1}}}, "invalid_parameter", id="nested-filter"
        ),
        pytest.param(
            {"question": "x", "stream": True, "filters": {"a": {"b": 1}}},
            "invalid_parameter",
            id="streamed-nested-filter",
        ),
    ],
)
def test_a_bad_answer_body_gets_a_4xx_with_a_stable_code(
    api: ApiUnderTest, keys: Keys, keeper: int, body: dict[str, Any], code: str
) -> None:
    assert_error(api.client.post(ANSWER, json=body, headers=keys["reader"]), 422, code)
    assert_still_serving(api, keys, keeper)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        pytest.param("limit=0", "invalid_request", id="limit-0"),
        pytest.param("limit=1001", "invalid_request", id="limit-over-max"),
        pytest.param("limit=99999999999999999999999", "invalid_request", id="limit-huge"),
        pytest.param("limit=ten", "invalid_request", id="limit-string"),
        pytest.param("state=bogus", "invalid_request", id="unknown-state"),
        pytest.param("after=" + "a" * 600, "invalid_request", id="after-too-long"),
    ],
)
def test_bad_list_parameters_get_422(
    api: ApiUnderTest, keys: Keys, keeper: int, query: str, code: str
) -> None:
    assert_error(api.client.get(f"{DOCS}?{query}", headers=keys["reader"]), 422, code)
    assert_still_serving(api, keys, keeper)


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("before=0", id="before-0"),
        pytest.param("before=9223372036854775808", id="before-over-int64"),
        pytest.param("before=99999999999999999999999", id="before-huge"),
        pytest.param("limit=0", id="limit-0"),
    ],
)
def test_bad_audit_parameters_get_422(
    api: ApiUnderTest, keys: Keys, keeper: int, query: str
) -> None:
    answer = api.client.get(f"/v1/tenants/{TENANT}/audit?{query}", headers=keys["admin"])
    assert_error(answer, 422, "invalid_request")
    assert_still_serving(api, keys, keeper)


# --- Tenant ids -----------------------------------------------------------------------------

BAD_TENANT_IDS = [
    pytest.param("UPPER", id="upper-case"),
    pytest.param("-lead", id="leading-dash"),
    pytest.param("_lead", id="leading-underscore"),
    pytest.param("a%20b", id="space"),
    pytest.param("%C3%A9", id="non-ascii"),
    pytest.param("x" * 64, id="64-characters"),
    pytest.param("a%00b", id="nul"),
    pytest.param("%2e%2e", id="encoded-dot-dot"),
    pytest.param("a.b", id="dot"),
]


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        pytest.param("GET", "", None, id="get-tenant"),
        pytest.param("DELETE", "", None, id="delete-tenant"),
        pytest.param("POST", "/keys", {"role": "reader"}, id="create-key"),
        pytest.param("GET", "/keys", None, id="list-keys"),
        pytest.param("GET", "/audit", None, id="audit"),
    ],
)
@pytest.mark.parametrize("tenant", BAD_TENANT_IDS)
def test_a_bad_tenant_id_in_a_path_is_refused_to_the_root_key(
    api: ApiUnderTest, keys: Keys, keeper: int, tenant: str, method: str, suffix: str, body: Any
) -> None:
    answer = api.client.request(
        method, f"/v1/tenants/{tenant}{suffix}", json=body, headers=api.root
    )
    assert_error(answer, 422, "invalid_tenant_id")
    assert_still_serving(api, keys, keeper)


@pytest.mark.parametrize("suffix", ["/documents", f"/documents/{KEEPER}", "/search", "/keys"])
@pytest.mark.parametrize("tenant", BAD_TENANT_IDS)
def test_a_bad_tenant_id_in_a_path_is_404_to_a_tenant_key(
    api: ApiUnderTest, keys: Keys, keeper: int, tenant: str, suffix: str
) -> None:
    """The guard answers before any check of the id: a tenant key sees only its own tenant."""
    method = "POST" if suffix == "/search" else "GET"
    answer = api.client.request(
        method, f"/v1/tenants/{tenant}{suffix}", json={"query": "x"}, headers=keys["admin"]
    )
    assert_error(answer, 404, "tenant_not_found")
    assert_still_serving(api, keys, keeper)


def test_the_root_key_on_a_document_route_is_403_whatever_the_tenant_id(
    api: ApiUnderTest, keys: Keys, keeper: int
) -> None:
    """The role check comes before the tenant check: root never reads documents."""
    for tenant in ("UPPER", "nobody", TENANT):
        answer = api.client.get(f"/v1/tenants/{tenant}/documents", headers=api.root)
        assert_error(answer, 403, "forbidden")
    assert_still_serving(api, keys, keeper)


def test_dot_dot_as_a_tenant_is_resolved_by_the_client_to_another_route(
    api: ApiUnderTest, keys: Keys
) -> None:
    """httpx sends ``/v1/tenants/../documents`` as ``/v1/documents``: no such route."""
    answer = api.client.get("/v1/tenants/../documents", headers=keys["reader"])
    assert_error(answer, 404, "route_not_found")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"name": "x", "id": "UPPER"}, "invalid_tenant_id", id="upper-case-id"),
        pytest.param({"name": "x", "id": "-x"}, "invalid_tenant_id", id="leading-dash-id"),
        pytest.param({"name": "x", "id": "a/b"}, "invalid_tenant_id", id="slash-id"),
        pytest.param({"name": "x", "id": "x" * 64}, "invalid_request", id="64-character-id"),
        pytest.param({"name": "x", "id": ""}, "invalid_request", id="empty-id"),
        pytest.param({"name": "!!!"}, "invalid_tenant_id", id="name-without-letters"),
        pytest.param({"name": ""}, "invalid_request", id="empty-name"),
        pytest.param({"name": "n" * 201}, "invalid_request", id="name-too-long"),
        pytest.param({}, "invalid_tenant_id", id="neither-name-nor-id"),
        pytest.param({"name": "x", "owner": "me"}, "invalid_request", id="unknown-field"),
    ],
)
def test_a_bad_tenant_to_create_is_refused(
    api: ApiUnderTest, keys: Keys, keeper: int, body: dict[str, Any], code: str
) -> None:
    before = api.client.get("/v1/tenants", headers=api.root).json()["tenants"]
    assert_error(api.client.post("/v1/tenants", json=body, headers=api.root), 422, code)
    assert api.client.get("/v1/tenants", headers=api.root).json()["tenants"] == before
    assert_still_serving(api, keys, keeper)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"role": "root"}, "invalid_parameter", id="root-role"),
        pytest.param({"role": "superuser"}, "invalid_request", id="unknown-role"),
        pytest.param({}, "invalid_request", id="no-role"),
        pytest.param({"role": "reader", "name": "n" * 201}, "invalid_request", id="long-name"),
    ],
)
def test_a_bad_key_to_create_is_refused(
    api: ApiUnderTest, keys: Keys, keeper: int, body: dict[str, Any], code: str
) -> None:
    url = f"/v1/tenants/{TENANT}/keys"
    before = api.client.get(url, headers=keys["admin"]).json()["keys"]
    assert_error(api.client.post(url, json=body, headers=keys["admin"]), 422, code)
    assert api.client.get(url, headers=keys["admin"]).json()["keys"] == before
    assert_still_serving(api, keys, keeper)


# --- Credentials ------------------------------------------------------------------------------


def _tampered(headers: dict[str, str]) -> dict[str, str]:
    value = headers["Authorization"]
    return {"Authorization": value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB")}


@pytest.mark.parametrize(
    "make_headers",
    [
        pytest.param(lambda w: {}, id="no-header"),
        pytest.param(lambda w: {"Authorization": ""}, id="empty-header"),
        pytest.param(lambda w: {"Authorization": "Bearer"}, id="bearer-without-key"),
        pytest.param(lambda w: {"Authorization": "Bearer    "}, id="bearer-blank-key"),
        pytest.param(lambda w: {"Authorization": "Basic dXNlcjpwdw=="}, id="basic-scheme"),
        pytest.param(
            lambda w: {"Authorization": w["Authorization"].replace("Bearer", "Token")},
            id="valid-key-wrong-scheme",
        ),
        pytest.param(
            lambda w: {"Authorization": w["Authorization"].split()[1]}, id="key-without-scheme"
        ),
        pytest.param(_tampered, id="tampered-secret"),
        pytest.param(
            lambda w: {"Authorization": w["Authorization"] + " trailing"}, id="extra-words"
        ),
        pytest.param(lambda w: {"Authorization": "Bearer srk_"}, id="prefix-only"),
        pytest.param(lambda w: {"Authorization": "Bearer srk__"}, id="empty-id-and-secret"),
        pytest.param(lambda w: {"Authorization": "Bearer " + "k" * 10_000}, id="10k-key"),
        pytest.param(
            lambda w: {"Authorization": b"Bearer \xff\xfe\x00"},
            id="non-ascii-bytes",
            marks=pytest.mark.in_process(
                reason="an HTTP server refuses a NUL in a header (uvicorn answers 400 itself): "
                "only the in-process transport hands it to the app"
            ),
        ),
    ],
)
@pytest.mark.parametrize(
    "attempt",
    [
        pytest.param(("GET", KEEPER_URL), id="read"),
        pytest.param(("PUT", KEEPER_URL), id="write"),
        pytest.param(("DELETE", KEEPER_URL), id="delete"),
        pytest.param(("GET", "/v1/whoami"), id="whoami"),
    ],
)
def test_missing_or_malformed_credentials_get_401(
    api: ApiUnderTest, keys: Keys, keeper: int, make_headers: Any, attempt: tuple[str, str]
) -> None:
    method, url = attempt
    content = b"an unauthorised replacement" if method == "PUT" else None
    headers = make_headers(keys["writer"])
    if api.url is not None:
        # httpx refuses to send some of these headers (a blank key's trailing spaces).
        answer = _over_a_socket(api.url, method, url, content, headers)
    else:
        answer = api.client.request(method, url, content=content, headers=headers)
    assert_error(answer, 401, "unauthorized")
    assert_still_serving(api, keys, keeper)


def _over_a_socket(
    base_url: str, method: str, path: str, content: bytes | None, headers: dict[str, Any]
) -> httpx.Response:
    """Send the request with its headers exactly as given (http.client checks less than
    httpx), and read the answer as an httpx response."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
    try:
        connection.putrequest(method, path)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(content or b"")))
        connection.endheaders(content)
        answer = connection.getresponse()
        return httpx.Response(answer.status, headers=answer.getheaders(), content=answer.read())
    finally:
        connection.close()


def test_a_revoked_key_gets_401_at_once(api: ApiUnderTest, keys: Keys, keeper: int) -> None:
    made = api.client.post(
        f"/v1/tenants/{TENANT}/keys", json={"role": "writer"}, headers=keys["admin"]
    )
    doomed = bearer(made.json()["key"])
    assert api.client.get(KEEPER_URL, headers=doomed).status_code == 200
    revoked = api.client.delete(
        f"/v1/tenants/{TENANT}/keys/{made.json()['id']}", headers=keys["admin"]
    )
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    for method in ("GET", "PUT", "DELETE"):
        answer = api.client.request(
            method, KEEPER_URL, content=b"x" if method == "PUT" else None, headers=doomed
        )
        assert "revoked" in assert_error(answer, 401, "unauthorized")["message"]
    assert_still_serving(api, keys, keeper)


def test_a_key_of_a_deleted_tenant_gets_401(api: ApiUnderTest, keys: Keys, keeper: int) -> None:
    gone = api.tenant("bad-gone")
    assert api.client.delete("/v1/tenants/bad-gone", headers=api.root).status_code == 200
    answer = api.client.get("/v1/tenants/bad-gone/documents", headers=gone["reader"])
    assert_error(answer, 401, "unauthorized")
    assert_still_serving(api, keys, keeper)


# --- Size limits (an app of its own with small limits) ----------------------------------------

REQUEST_LIMIT = 64 * 1024
DOCUMENT_LIMIT = 16 * 1024


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiUnderTest, Keys, int]]:
    """An app with a 64 KiB request limit and a 16 KiB document limit, a tenant and a keeper."""
    under_test = open_api(
        tmp_path_factory.mktemp("small") / "data",
        max_request_bytes=REQUEST_LIMIT,
        max_document_bytes=DOCUMENT_LIMIT,
    )
    try:
        small_keys = under_test.tenant(TENANT)
        put = under_test.client.put(
            KEEPER_URL, params={"wait": "true"}, content=KEEPER_TEXT, headers=small_keys["writer"]
        )
        assert put.status_code == 200, put.text
        yield under_test, small_keys, put.json()["version"]
    finally:
        under_test.client.close()
        under_test.rag.close()


def _chunks(total: int, size: int = 8192) -> Iterator[bytes]:
    """A body without Content-Length: httpx sends a generator chunked."""
    sent = 0
    while sent < total:
        piece = b"word " * (size // 5)
        sent += len(piece)
        yield piece


@pytest.mark.parametrize(
    "make_request",
    [
        pytest.param(
            lambda w: {"method": "PUT", "url": KEEPER_URL, "content": b"a " * (20 * 1024)},
            id="raw-body",
        ),
        pytest.param(
            lambda w: {
                "method": "PUT",
                "url": KEEPER_URL,
                "files": {"file": (KEEPER, b"a " * (20 * 1024))},
            },
            id="multipart",
        ),
    ],
)
def test_a_document_over_max_document_bytes_is_413_document_too_large(
    small: tuple[ApiUnderTest, Keys, int], make_request: Any
) -> None:
    app, small_keys, version = small
    answer = app.client.request(**make_request(small_keys), headers=small_keys["writer"])
    error = assert_error(answer, 413, "document_too_large")
    assert error["details"]["limit"] == DOCUMENT_LIMIT
    assert_still_serving(app, small_keys, version)


OVERSIZED = {
    "document-with-content-length": (KEEPER_URL, "writer", False),
    "document-chunked": (KEEPER_URL, "writer", True),
    "multipart-document": (KEEPER_URL, "writer", False),
    "search-with-content-length": (SEARCH, "reader", False),
    "search-chunked": (SEARCH, "reader", True),
}


def _oversized(case: str) -> dict[str, Any]:
    """The request of ``case``: a body of twice the request limit."""
    big = b"a " * REQUEST_LIMIT
    requests: dict[str, dict[str, Any]] = {
        "document-with-content-length": {"content": big},
        "document-chunked": {"content": _chunks(2 * REQUEST_LIMIT)},
        "multipart-document": {"files": {"file": (KEEPER, big)}},
        "search-with-content-length": {"json": {"query": "q" * (2 * REQUEST_LIMIT)}},
        "search-chunked": {
            "content": _chunks(2 * REQUEST_LIMIT),
            "headers": {"Content-Type": "application/json"},
        },
    }
    return requests[case]


@pytest.mark.parametrize("case", list(OVERSIZED))
def test_a_body_over_max_request_bytes_is_413_request_too_large(
    small: tuple[ApiUnderTest, Keys, int], case: str
) -> None:
    app, small_keys, version = small
    url, role, chunked = OVERSIZED[case]
    kwargs = _oversized(case)
    headers = {**small_keys[role], **kwargs.pop("headers", {})}
    answer = app.client.request(
        "PUT" if url == KEEPER_URL else "POST", url, headers=headers, **kwargs
    )
    error = assert_error(answer, 413, "request_too_large")
    assert error["details"]["limit"] == REQUEST_LIMIT
    sent = answer.request.headers
    if chunked:
        assert "content-length" not in sent and sent["transfer-encoding"] == "chunked"
    else:
        assert int(sent["content-length"]) > REQUEST_LIMIT
    assert_still_serving(app, small_keys, version)


def test_an_oversized_body_without_a_key_is_401_first(
    small: tuple[ApiUnderTest, Keys, int],
) -> None:
    """The guard's order: 401 (no key) before 413 (too large); nothing is read."""
    app, small_keys, version = small
    answer = app.client.put(KEEPER_URL, content=b"a " * REQUEST_LIMIT)
    assert_error(answer, 401, "unauthorized")
    assert_still_serving(app, small_keys, version)


def test_a_body_just_under_the_limits_is_accepted(small: tuple[ApiUnderTest, Keys, int]) -> None:
    app, small_keys, version = small
    text = b"Tide tables. " * (DOCUMENT_LIMIT // 13)
    assert len(text) <= DOCUMENT_LIMIT
    answer = app.client.put(f"{DOCS}/tides.txt", content=text, headers=small_keys["writer"])
    assert answer.status_code == 202, answer.text
    assert_still_serving(app, small_keys, version)
