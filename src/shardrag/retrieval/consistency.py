"""Read concerns: what a search must see, as the log offset per shard a replica must have applied.

- ``eventual``: whatever the replica asked has applied (no offsets);
- ``session`` with a write's token: that write, once decided, at the position of its commit
  in its shard's log (a failed or overtaken version needs nothing);
- ``strong``: every write of the tenant accepted before the search, decided, then each of the
  tenant's shards at its log head.

This module waits only for writes to be *decided* (the registry). Waiting for a replica to
*apply* the offsets happens on the replica side (``cluster/serving.py``), the same in both
modes: the router sends the offsets along and only a replica that far answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shardrag import validation
from shardrag.cluster.placements import Placements
from shardrag.errors import InvalidParameter, ReadConcernTimeout, TenantNotFound
from shardrag.log import Log
from shardrag.models import ReadConcern, VersionState, WriteToken
from shardrag.pipeline.events import shard_subject
from shardrag.registry import Registry

#: Waits until a condition holds or ``timeout`` seconds pass (False then).
WaitUntil = Callable[[Callable[[], bool], float], bool]


class ReadPositions:
    """Resolves a search's read concern into per-shard log offsets (see the module)."""

    def __init__(
        self,
        registry: Registry,
        log: Log,
        placements: Placements,
        wait_until: WaitUntil,
        timeout: float,
    ) -> None:
        self.registry = registry
        self.log = log
        self.placements = placements
        self.wait_until = wait_until
        self.timeout = timeout

    def resolve(
        self, tenant: str, read_concern: ReadConcern | str, write_token: str | None
    ) -> dict[int, int]:
        """The offsets the read needs (empty for ``eventual``); ``ReadConcernTimeout`` if the
        writes it must see are not decided within the timeout."""
        concern = validation.read_concern(read_concern)
        if concern is ReadConcern.EVENTUAL:
            return {}
        if concern is ReadConcern.STRONG:
            since = time.time()

            def decided() -> bool:
                pending = self.registry.pending_versions(tenant)
                return not any(p.created_at <= since for p in pending)

            what = f"the writes of tenant {tenant!r}"
        else:
            if not write_token:
                raise InvalidParameter("read_concern 'session' needs the write_token of a write")
            token = WriteToken.decode(write_token)
            if token.tenant != tenant:
                raise InvalidParameter("write_token belongs to another tenant")
            # A token is not signed: its id is checked like any caller's before a database
            # sees it (a NUL or an over-long id must be a 400, not a driver's error).
            validation.doc_id(token.doc_id)

            def decided() -> bool:
                info = self.registry.version(token.tenant, token.doc_id, token.version)
                return info is None or info.state is not VersionState.PENDING

            what = "the write of the token"
        record = self.registry.get_tenant(tenant)
        if record is None:
            raise TenantNotFound(f"no tenant {tenant!r}", tenant=tenant)
        if not self.wait_until(decided, self.timeout):
            raise ReadConcernTimeout(
                f"waited {self.timeout:g} s for {what} to be decided",
                timeout_seconds=self.timeout,
            )
        if concern is ReadConcern.STRONG:
            return {
                s: self.log.last_sequence(shard_subject(s))
                for s in self.placements.of(tenant, fresh=True).shards
            }
        return self._token_position(token, record.shard_id)

    def _token_position(self, token: WriteToken, shard_id: int) -> dict[int, int]:
        """Where the token's commit is in its shard's log ({} if it never reached it)."""
        info = self.registry.version(token.tenant, token.doc_id, token.version)
        if info is None:
            return {}  # gone with its tenant
        position = token.position or info.commit_position
        if position is None:
            return {}  # failed before its commit reached the shard log: nothing to show
        return {token.shard_id if token.shard_id is not None else shard_id: position}
