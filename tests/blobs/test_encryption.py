"""Encryption at rest: no plaintext in the blob store, keys per tenant, crypto-shredding."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shardrag import Shardrag
from shardrag.blobs import LocalBlobStore
from shardrag.blobs.encrypted import EncryptedBlobStore, Keyring, master_key_from
from shardrag.errors import InternalError, InvalidParameter, NotFound
from shardrag.registry.sqlite import SqliteRegistry

MASTER = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
SECRET = b"The launch code of the Nebula project is OCTOPUS-7731."


def _raw_files(root: Path) -> list[bytes]:
    return [p.read_bytes() for p in root.rglob("*") if p.is_file()]


def test_originals_are_stored_encrypted_and_a_dropped_tenant_is_unreadable(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with Shardrag.open(data, master_key=MASTER) as rag:
        rag.put_document("acme", "nebula.txt", SECRET)
        rag.put_document("globex", "nebula.txt", SECRET)
        hits = rag.search("acme", "Nebula launch code", k=1)
        assert hits and "OCTOPUS-7731" in hits[0].text
        blobs = _raw_files(data / "blobs")
        # One copy per tenant (each under its own key), and no plaintext anywhere.
        assert len(blobs) >= 2
        assert not any(b"OCTOPUS" in raw or b"Nebula" in raw for raw in blobs)
        store = rag.backends.blobs
        assert isinstance(store, EncryptedBlobStore)
        digest = rag.get_document("acme", "nebula.txt").latest.content_hash
        assert digest is not None
        assert store.get(digest, owner="acme") == SECRET
        backup = tmp_path / "backup"
        shutil.copytree(data / "blobs", backup)
        rag.drop_tenant("acme")
        with pytest.raises(NotFound):
            store.get(digest, owner="acme")
        assert store.get(digest, owner="globex") == SECRET
    # A copy of the files and the master key do not bring the dropped tenant's data back.
    registry = SqliteRegistry(data / "registry.sqlite3")
    try:
        restored = EncryptedBlobStore(
            LocalBlobStore(backup), Keyring(bytes.fromhex(MASTER), registry)
        )
        with pytest.raises(NotFound):
            restored.get(digest, owner="acme")
        assert restored.get(digest, owner="globex") == SECRET
    finally:
        registry.close()


def test_snapshots_and_wrong_master_keys(tmp_path: Path) -> None:
    registry = SqliteRegistry(tmp_path / "registry.sqlite3")
    try:
        registry.ensure_tenant("acme", 0)
        store = EncryptedBlobStore(
            LocalBlobStore(tmp_path / "blobs"), Keyring(bytes.fromhex(MASTER), registry)
        )
        snapshot = b"shard snapshot holding " + SECRET
        digest = store.put(snapshot)  # a shard snapshot: the cluster's own key
        assert store.exists(digest) and store.get(digest) == snapshot
        store.put(SECRET, owner="acme")
        assert not any(b"OCTOPUS" in raw for raw in _raw_files(tmp_path / "blobs"))
        other = EncryptedBlobStore(LocalBlobStore(tmp_path / "blobs"), Keyring(bytes(32), registry))
        with pytest.raises(InternalError):
            other.get(store.put(SECRET, owner="acme"), owner="acme")
    finally:
        registry.close()
    with pytest.raises(InvalidParameter):
        master_key_from("not hex", None)
    key_file = tmp_path / "master.key"
    key_file.write_text(MASTER + "\n")
    assert master_key_from(None, str(key_file)) == bytes.fromhex(MASTER)


NEW_MASTER = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"


def test_a_rotation_rewraps_every_key_and_the_old_master_key_then_opens_nothing(
    tmp_path: Path,
) -> None:
    registry = SqliteRegistry(tmp_path / "registry.sqlite3")
    blobs = LocalBlobStore(tmp_path / "blobs")
    old, new = bytes.fromhex(MASTER), bytes.fromhex(NEW_MASTER)
    try:
        registry.ensure_tenant("acme", 0)
        before = EncryptedBlobStore(blobs, Keyring(old, registry))
        original = before.put(SECRET, owner="acme")
        snapshot = before.put(b"a shard snapshot")
        assert set(registry.wrapped_keys()) == {"acme", "@snapshots"}

        during = Keyring(new, registry, previous=[old])
        rotating = EncryptedBlobStore(blobs, during)
        assert rotating.get(original, owner="acme") == SECRET  # still under the old key
        assert during.rotate() == 2
        assert during.rotate() == 0  # done: nothing left under the old key

        after = EncryptedBlobStore(blobs, Keyring(new, registry))
        assert after.get(original, owner="acme") == SECRET
        assert after.get(snapshot) == b"a shard snapshot"
        stale = EncryptedBlobStore(blobs, Keyring(old, registry))
        with pytest.raises(InternalError):
            stale.get(original, owner="acme")
        with pytest.raises(InternalError):
            stale.get(snapshot)
    finally:
        registry.close()


def test_snapshots_made_under_the_derived_key_stay_readable(tmp_path: Path) -> None:
    """Before the snapshots' key was stored it was derived from the master key: the stored
    one starts as that key, so older snapshots open, and it survives a rotation."""
    import hashlib
    import hmac
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    master = bytes.fromhex(MASTER)
    legacy = hmac.digest(master, b"shardrag snapshots", "sha256")
    blobs = LocalBlobStore(tmp_path / "blobs")
    data = b"a snapshot of an older release"
    digest = hashlib.sha256(data).hexdigest()
    nonce = os.urandom(12)
    name = hmac.digest(legacy, digest.encode(), "sha256").hex()
    blobs.put_named(name, nonce + AESGCM(legacy).encrypt(nonce, data, digest.encode()))
    registry = SqliteRegistry(tmp_path / "registry.sqlite3")
    try:
        assert EncryptedBlobStore(blobs, Keyring(master, registry)).get(digest) == data
        Keyring(bytes.fromhex(NEW_MASTER), registry, previous=[master]).rotate()
        rotated = EncryptedBlobStore(blobs, Keyring(bytes.fromhex(NEW_MASTER), registry))
        assert rotated.get(digest) == data
    finally:
        registry.close()


def test_a_dropped_tenants_wrapped_key_is_in_no_page_of_the_registry(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Shardrag.open(data, master_key=MASTER) as rag:
        rag.put_document("acme", "nebula.txt", SECRET)
        wrapped = rag.registry.data_key("acme")
        assert wrapped is not None
        files = sorted(data.glob("registry.sqlite3*"))
        assert any(wrapped in path.read_bytes() for path in files)
        rag.drop_tenant("acme")
        leftovers = [p.name for p in data.glob("registry.sqlite3*") if wrapped in p.read_bytes()]
        assert leftovers == []


def test_rotate_master_key_from_the_cli_and_the_api(tmp_path: Path) -> None:
    from tests.api.conftest import open_api
    from typer.testing import CliRunner

    from shardrag.cli import app

    data = tmp_path / "data"
    with Shardrag.open(data, master_key=MASTER) as rag:
        rag.put_document("acme", "nebula.txt", SECRET)
    runner = CliRunner()
    env = {"SHARDRAG_MASTER_KEY": NEW_MASTER, "SHARDRAG_PREVIOUS_MASTER_KEY": MASTER}
    done = runner.invoke(
        app, ["security", "rotate-master-key", "--data-dir", str(data), "--json"], env=env
    )
    assert done.exit_code == 0, done.output
    assert '"rewrapped": 1' in done.output
    with Shardrag.open(data, master_key=NEW_MASTER) as rag:
        assert rag.get_original("acme", "nebula.txt") == SECRET

    api = open_api(tmp_path / "served", master_key=NEW_MASTER)
    try:
        rotated = api.client.post("/v1/admin/security/rotate-master-key", headers=api.root)
        assert rotated.status_code == 200, rotated.text
        assert rotated.json() == {"rewrapped": 0}
    finally:
        api.client.close()
        api.rag.close()
    plain = open_api(tmp_path / "plain")
    try:
        refused = plain.client.post("/v1/admin/security/rotate-master-key", headers=plain.root)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "encryption_off"
    finally:
        plain.client.close()
        plain.rag.close()
