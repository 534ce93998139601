"""The blob store's contract; every backend must pass the same tests.

S3: a real S3-compatible HTTP server (moto's, in a thread of this process), one bucket per
test. Two stores opened on one directory or bucket stand for two processes (or hosts).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from shardrag.blobs import BlobStore, LocalBlobStore, open_blob_store
from shardrag.blobs.encrypted import EncryptedBlobStore, Keyring
from shardrag.blobs.s3 import S3BlobStore
from shardrag.errors import InternalError, InvalidParameter, NotFound, Unavailable
from shardrag.registry.sqlite import SqliteRegistry

OpenStore = Callable[[], BlobStore]
UNKNOWN = hashlib.sha256(b"never stored").hexdigest()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """The URL of an S3-compatible server on a free loopback port, for this module's tests."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A fresh bucket on the test server, with dummy credentials in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # Nothing of the machine's own AWS configuration may leak in.
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    bucket = f"test-{secrets.token_hex(6)}"
    s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    return bucket


def s3_client(endpoint: str) -> Any:
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture(params=["local", "s3", "local+encrypted", "s3+encrypted"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens the backend under test on the same storage each time it is called; encrypted:
    the same under ``EncryptedBlobStore`` (a master key, the snapshots' key)."""
    inner: Callable[[], LocalBlobStore | S3BlobStore]
    if request.param.startswith("s3"):
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        inner = lambda: S3BlobStore(bucket, "tenant-data", endpoint_url=endpoint)  # noqa: E731
    else:
        inner = lambda: LocalBlobStore(tmp_path / "shared")  # noqa: E731
    if not request.param.endswith("encrypted"):
        yield inner
        return
    registry = SqliteRegistry(tmp_path / "registry.sqlite3")
    try:
        yield lambda: EncryptedBlobStore(inner(), Keyring(bytes(range(32)), registry))
    finally:
        registry.close()


def test_a_blob_is_stored_under_its_sha256(open_store: OpenStore) -> None:
    store = open_store()
    data = b"the original of a document"
    digest = store.put(data)

    assert digest == hashlib.sha256(data).hexdigest()
    assert store.exists(digest)
    assert store.get(digest) == data
    assert not store.exists(UNKNOWN)


def test_putting_a_blob_twice_is_a_no_op(open_store: OpenStore) -> None:
    store = open_store()
    digest = store.put(b"twice")
    assert store.put(b"twice") == digest
    assert store.get(digest) == b"twice"


def test_an_unknown_blob_is_not_found_and_a_malformed_digest_refused(
    open_store: OpenStore,
) -> None:
    store = open_store()
    with pytest.raises(NotFound):
        store.get(UNKNOWN)
    for digest in ["../../etc/passwd", UNKNOWN.upper(), UNKNOWN[:-1], ""]:
        with pytest.raises(InvalidParameter):
            store.get(digest)
        with pytest.raises(InvalidParameter):
            store.exists(digest)


def test_any_bytes_come_back_exactly(open_store: OpenStore) -> None:
    store = open_store()
    for data in [b"", bytes(range(256)) * 4, os.urandom(5 * 1024 * 1024)]:
        assert store.get(store.put(data)) == data


def test_concurrent_puts_of_one_blob_are_harmless(open_store: OpenStore) -> None:
    stores = [open_store() for _ in range(8)]  # eight processes, say
    data = os.urandom(256 * 1024)
    start = threading.Barrier(len(stores))
    digests: list[str] = []
    errors: list[BaseException] = []

    def put(store: BlobStore) -> None:
        try:
            start.wait()
            digests.append(store.put(data))
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert digests == [hashlib.sha256(data).hexdigest()] * len(stores)
    assert all(store.get(digests[0]) == data for store in stores)


def test_a_blob_is_never_seen_half_written(open_store: OpenStore) -> None:
    writer, reader = open_store(), open_store()
    data = os.urandom(4 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    seen: list[bytes] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(reader.get(digest))
                return
            except NotFound:
                pass

    thread = threading.Thread(target=read)
    thread.start()
    writer.put(data)
    thread.join(timeout=30)
    stop.set()
    thread.join()
    assert seen in ([], [data])
    assert reader.get(digest) == data


def test_stores_on_one_storage_see_each_others_blobs(open_store: OpenStore) -> None:
    api, worker = open_store(), open_store()
    digest = api.put(b"uploaded through the api")
    assert worker.exists(digest)
    assert worker.get(digest) == b"uploaded through the api"
    assert api.get(worker.put(b"chunks from a worker")) == b"chunks from a worker"


# Per backend: layout, and what only one of them can run into.


def test_a_local_blob_is_one_file_and_no_temporary_is_left(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    digest = store.put(b"file")
    path = tmp_path / "blobs" / digest[:2] / digest
    inode = path.stat().st_ino
    store.put(b"file")

    assert path.stat().st_ino == inode  # not written again
    assert sorted(p.name for p in (tmp_path / "blobs").rglob("*")) == sorted([digest[:2], digest])
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644 & ~umask


def test_an_s3_blob_is_one_object_under_the_prefix_checked_on_reading(
    s3_endpoint: str, s3_bucket: str
) -> None:
    client = s3_client(s3_endpoint)
    client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    store = S3BlobStore(s3_bucket, "/tenant-data", endpoint_url=s3_endpoint)
    digest = store.put(b"object")
    store.put(b"object")

    key = f"tenant-data/blobs/{digest[:2]}/{digest}"
    versions = client.list_object_versions(Bucket=s3_bucket)["Versions"]
    assert [v["Key"] for v in versions] == [key]

    client.put_object(Bucket=s3_bucket, Key=key, Body=b"something else")
    with pytest.raises(InternalError, match="corrupt"):  # checked against its digest
        store.get(digest)


def test_an_s3_store_needs_its_bucket_and_a_reachable_endpoint(
    s3_endpoint: str, s3_bucket: str
) -> None:
    with pytest.raises(Unavailable, match="no S3 bucket"):
        S3BlobStore(f"{s3_bucket}-missing", endpoint_url=s3_endpoint)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    started = time.monotonic()
    with pytest.raises(Unavailable):
        S3BlobStore(s3_bucket, endpoint_url=f"http://127.0.0.1:{closed_port}")
    assert time.monotonic() - started < 10


def test_the_factory_picks_the_backend_by_url(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    embedded = open_blob_store(tmp_path / "data")
    assert isinstance(embedded, LocalBlobStore)
    assert embedded.root == tmp_path / "data" / "blobs"
    shared = tmp_path / "shared dir"
    for url in [shared.as_uri(), str(shared), f"file://localhost{shared}"]:
        store = open_blob_store(tmp_path / "data", url)
        assert isinstance(store, LocalBlobStore)
        assert store.root == shared

    s3 = open_blob_store(tmp_path / "data", f"s3://{s3_bucket}/a/b/", endpoint_url=s3_endpoint)
    assert isinstance(s3, S3BlobStore)
    assert (s3.bucket, s3.prefix) == (s3_bucket, "a/b/")
    assert s3.get(s3.put(b"x")) == b"x"

    for url in ["relative/dir", "file:relative", "file://host/dir", "http://x/y", "s3:///p"]:
        with pytest.raises(InvalidParameter) as raised:
            open_blob_store(tmp_path / "data", url)
        assert raised.value.details == {"setting": "blob_url"}
