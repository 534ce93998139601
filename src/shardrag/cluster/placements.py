"""Where each tenant's documents live: placing new tenants, and the placements a process reads.

A tenant is placed once, when it is created: on the shared shard its id hashes to, recorded in
the shard map (compare-and-set, so two api processes creating the same tenant agree) and in the
registry. A placement changes after that only when the tenant is dropped or moved
(``placement.py``), so searches need not ask the map each time: ``of`` remembers it for a few
seconds. Past ``_TTL`` the remembered one still serves while a background read refreshes it, up
to ``_STALE`` (less than the grace a move gives api processes): a map that is slow for a moment
(its bucket electing a leader after a NATS server died) holds no search. Older than that the
map is read first; if it is unavailable the placement read before serves (a warning).

Writes never use a remembered placement (``shard_for``): routed by an old one, a version could
miss a move's copy, so a map that does not answer refuses the write (503).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib

from shardrag import validation
from shardrag.cluster.shardmap import Layout, Placement, ShardMap
from shardrag.errors import TenantNotFound, Unavailable
from shardrag.registry import Registry, TenantRecord

log = logging.getLogger(__name__)
# How long a tenant's placement read from the shard map is trusted (seconds).
_TTL = 5.0
#: How old a remembered placement may be while a background read refreshes it.
_STALE = 8.0


class Placements:
    """Creates tenants where they belong and tells where a tenant's documents are."""

    def __init__(self, shard_map: ShardMap, registry: Registry, layout: Layout) -> None:
        self.shard_map = shard_map
        self.registry = registry
        self.layout = layout
        self._creating = threading.Lock()
        self._known: dict[str, tuple[float, Placement]] = {}
        self._refreshing: set[str] = set()
        self._refresh_lock = threading.Lock()

    def create_tenant(
        self, tenant: str, name: str | None = None, exist_ok: bool = True
    ) -> TenantRecord:
        """Create (or with ``exist_ok``, return) the tenant, placed on its hash's shard."""
        validation.tenant_id(tenant)
        with self._creating:
            wanted = zlib.crc32(tenant.encode()) % self.layout.shards
            shard_id = self.shard_map.place_tenant(tenant, [wanted])[0]
            if exist_ok:
                return self.registry.ensure_tenant(tenant, shard_id, name)
            return self.registry.create_tenant(tenant, shard_id, name or tenant)

    def ensure_tenant(self, tenant: str) -> TenantRecord:
        """The tenant's record, creating the tenant on first use (a first write)."""
        return self.create_tenant(tenant)

    def of(self, tenant: str, fresh: bool = False) -> Placement:
        """The tenant's placement, remembered for a few seconds (see the module); ``fresh``
        reads the map."""
        now = time.monotonic()
        known = self._known.get(tenant)
        if not fresh and known is not None:
            age = now - known[0]
            if age < _TTL:
                return known[1]
            if age < _STALE:
                self._refresh_soon(tenant)
                return known[1]
        return self._read(tenant, known)

    def shard_for(self, record: TenantRecord, doc_id: str) -> int:
        """The shard a new version of a document goes to, from the placement as the map has
        it now (a version pending before a move's flip is waited for by the move)."""
        return self._read(record.tenant).shard_of(doc_id)

    def forget(self, tenant: str) -> None:
        """Drop what is remembered of a tenant (it was dropped)."""
        self._known.pop(tenant, None)

    def _read(self, tenant: str, known: tuple[float, Placement] | None = None) -> Placement:
        now = time.monotonic()
        try:
            placement = self.shard_map.placement(tenant)
            if placement is None:  # placed before the shard map held placements
                record = self.registry.get_tenant(tenant)
                if record is None:
                    raise TenantNotFound(f"no tenant {tenant!r}", tenant=tenant)
                shards = self.shard_map.place_tenant(tenant, [record.shard_id])
                placement = Placement(tuple(shards))
        except Unavailable:
            if known is None:
                raise
            log.warning("shard map unavailable; using the placement of %s read before", tenant)
            return known[1]
        self._known[tenant] = (now, placement)
        return placement

    def _refresh_soon(self, tenant: str) -> None:
        """Read the tenant's placement again in the background (once at a time)."""
        with self._refresh_lock:
            if tenant in self._refreshing:
                return
            self._refreshing.add(tenant)

        def refresh() -> None:
            try:
                self._read(tenant, self._known.get(tenant))
            except Exception:
                log.exception("refreshing the placement of %s failed", tenant)
            finally:
                with self._refresh_lock:
                    self._refreshing.discard(tenant)

        threading.Thread(target=refresh, name="placement-refresh", daemon=True).start()
