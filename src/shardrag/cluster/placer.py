"""Placement by size: promote or split the tenants that outgrew their shards, on a timer.

Runs in the api processes of a cluster whose settings set a threshold
(``promote_threshold_chunks``, ``split_threshold_chunks``); every ``placement_check_seconds``
it compares each tenant's chunk count with its placement (``placement.wanted_shards``) and
moves the ones that outgrew it (``Mover.promote``, which resumes a move another process left
half done, so several api processes checking at once agree).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from shardrag.cluster.placement import Mover, wanted_shards
from shardrag.cluster.shardmap import Layout, ShardMap
from shardrag.config import Settings
from shardrag.registry import Registry

log = logging.getLogger(__name__)


class SizePlacer:
    """The placement check's thread (see the module)."""

    def __init__(
        self,
        registry: Registry,
        shard_map: ShardMap,
        layout: Layout,
        settings: Settings,
        mover: Callable[[], Mover],
    ) -> None:
        self.registry = registry
        self.shard_map = shard_map
        self.layout = layout
        self.settings = settings
        self.mover = mover
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="placer", daemon=True)

    def start(self) -> None:
        """Check every ``placement_check_seconds`` until ``stop``."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the check under way (a move it started goes on to its end)."""
        self._stopped.set()

    def check(self) -> None:
        """Promote or split every tenant past the thresholds now."""
        settings = self.settings
        for record in self.registry.list_tenants():
            placement = self.shard_map.placement(record.tenant)
            if placement is None:
                continue
            wanted = wanted_shards(
                self.registry.tenant_size(record.tenant),
                placement,
                self.layout,
                settings.promote_threshold_chunks,
                settings.split_threshold_chunks,
            )
            if wanted is not None and not self._stopped.is_set():
                log.info("tenant %s outgrew its placement: %d shard(s)", record.tenant, wanted)
                self.mover().promote(record.tenant, wanted)

    def _run(self) -> None:
        while not self._stopped.wait(self.settings.placement_check_seconds):
            try:
                self.check()
            except Exception:
                log.exception("the placement check failed; trying again later")
