"""Deterministic point ids: replaying any write produces the same points, never duplicates."""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("6f1c2a4e-5b7d-4c3e-9a8f-2d1e0b9c7a65")


def point_id(tenant: str, doc_id: str, version: int, chunk_index: int) -> str:
    """uuid5 of (tenant, doc, version, chunk index), as ARCHITECTURE.md §2 specifies."""
    # NUL cannot occur in validated ids, so the join is unambiguous.
    return str(uuid.uuid5(_NAMESPACE, f"{tenant}\x00{doc_id}\x00{version}\x00{chunk_index}"))
