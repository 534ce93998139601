"""Idempotency keys: a retried write with the same key gets the first write's result again.

The key is the caller's (the HTTP header ``Idempotency-Key``, or ``put_document``'s
``idempotency_key``), scoped to the tenant and the document's access groups, and bound to
every input of the write (document id, bytes, name, type, title, metadata, groups, ``wait``):
the same key with another request is a conflict (409), never a silent second version. The
first answer is kept in the registry, so a retry reaching another api process is answered the
same; two first requests racing both get the answer stored first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable

from shardrag import acl as access
from shardrag import validation
from shardrag.errors import IdempotencyConflict
from shardrag.models import DocumentInput, VersionState, WriteResult
from shardrag.registry import Registry, StoredResponse


class IdempotentWrites:
    """Runs writes at most once per tenant and key (see the module)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def run(
        self,
        tenant: str,
        key: str,
        document: DocumentInput,
        wait: bool,
        write: Callable[[], WriteResult],
    ) -> WriteResult:
        """The result of ``write()`` — or of the first write made with ``key``
        (``replayed=True``); ``IdempotencyConflict`` if that one had other inputs."""
        validation.idempotency_key(key)
        key = _scoped(key, document)
        fingerprint = _fingerprint(document, wait)
        stored = self.registry.stored_response(tenant, key)
        if stored is not None:
            return _replayed(stored, fingerprint)
        result = write()
        status = 202 if result.state is VersionState.PENDING else 200
        self.registry.store_response(
            tenant, key, StoredResponse(fingerprint, status, result.to_dict(), time.time())
        )
        # Two first requests may race: the answer stored first is the answer to both.
        winner = self.registry.stored_response(tenant, key)
        if winner is None or winner.body == result.to_dict():
            return result
        return _replayed(winner, fingerprint)


def _scoped(key: str, document: DocumentInput) -> str:
    """The key as stored: within the access groups the document is written with.

    Writers of different groups never share a key (a conflict would tell one that the other
    used it). Writers of the same groups read each other's documents, so they may.
    """
    _, groups = access.split(document.metadata)
    if not groups:
        return key
    digest = hashlib.sha256(json.dumps(list(groups)).encode()).hexdigest()[:24]
    return f"@{digest}:{key}"


def _fingerprint(document: DocumentInput, wait: bool) -> str:
    """What a key is bound to: every input of the write."""
    fields = [
        document.doc_id,
        document.filename,
        document.content_type,
        document.title,
        document.metadata,
        wait,
    ]
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode() + document.data).hexdigest()


def _replayed(stored: StoredResponse, fingerprint: str) -> WriteResult:
    """The first answer to a key, for a retry of the same write."""
    if stored.request_hash != fingerprint:
        raise IdempotencyConflict(
            "this Idempotency-Key was used for a different request; use a new key"
        )
    return dataclasses.replace(WriteResult.from_dict(stored.body), replayed=True)
