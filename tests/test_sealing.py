"""Sealing (sealing.py): values of a tenant under its data key, across processes that cache
keys, and across a drop and a re-creation of the tenant."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardrag.blobs import LocalBlobStore
from shardrag.blobs.encrypted import EncryptedBlobStore, Keyring
from shardrag.errors import InternalError
from shardrag.registry.sqlite import SqliteRegistry
from shardrag.sealing import KeySealer, Plain, seal_text, unseal_text

MASTER = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")


@pytest.fixture
def registry(tmp_path: Path) -> SqliteRegistry:
    found = SqliteRegistry(tmp_path / "registry.sqlite3")
    found.ensure_tenant("acme", 0)
    return found


def test_a_sealed_value_opens_for_its_owner_and_place_only(registry: SqliteRegistry) -> None:
    registry.ensure_tenant("globex", 0)
    sealer = KeySealer(Keyring(MASTER, registry))
    sealed = sealer.seal("acme", b"the launch code", "log event")
    assert b"launch" not in sealed
    assert sealer.unseal("acme", sealed, "log event") == b"the launch code"
    with pytest.raises(InternalError):
        sealer.unseal("acme", sealed, "shard payload")  # moved to another place
    assert sealer.unseal("globex", sealed, "log event") is None  # not under globex's key
    assert sealer.tag("acme", "x") == sealer.tag("acme", "x") != sealer.tag("globex", "x")
    text = seal_text(sealer.bound("acme"), "quarterly.txt", "registry version")
    assert text is not None and "quarterly" not in text
    assert unseal_text(sealer, text, "registry version") == "quarterly.txt"


def test_without_a_master_key_nothing_changes() -> None:
    plain = Plain()
    assert plain.seal("acme", b"x", "p") == b"x" and plain.tag("acme", "v") == "v"
    assert seal_text(plain.bound("acme"), "name", "p") == "name"


def test_a_process_holding_a_dropped_incarnations_key_writes_and_reads_the_new_ones(
    registry: SqliteRegistry, tmp_path: Path
) -> None:
    """Two processes over one registry; the tenant is dropped and made again through the
    first while the second still caches the dropped incarnation's key."""
    first, second = Keyring(MASTER, registry), Keyring(MASTER, registry)
    sealer_1, sealer_2 = KeySealer(first), KeySealer(second)
    blobs_1 = EncryptedBlobStore(LocalBlobStore(tmp_path / "blobs"), first)
    blobs_2 = EncryptedBlobStore(LocalBlobStore(tmp_path / "blobs"), second)
    old = sealer_2.seal("acme", b"of the dropped tenant", "log event")
    assert second.existing_key("acme") is not None  # cached in the second process

    registry.delete_tenant("acme")
    first.forget("acme")
    registry.ensure_tenant("acme", 0)

    new = sealer_2.seal("acme", b"of the new tenant", "log event")  # writes: the current key
    assert sealer_1.unseal("acme", new, "log event") == b"of the new tenant"
    assert sealer_2.unseal("acme", new, "log event") == b"of the new tenant"
    assert sealer_1.unseal("acme", old, "log event") is None  # its key is gone
    digest = blobs_1.put(b"an original of the new tenant", owner="acme")
    assert blobs_2.get(digest, owner="acme") == b"an original of the new tenant"
