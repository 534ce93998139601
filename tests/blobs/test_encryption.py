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
