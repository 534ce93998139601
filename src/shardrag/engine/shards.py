"""The shards of one data dir, opened on first use."""

from __future__ import annotations

import threading
from pathlib import Path

from shardrag.engine.shard import EngineSettings, ShardEngine
from shardrag.sealing import Sealer


class ShardSet:
    """The shard engines under ``root`` (``root/shard-0000`` ...), opened lazily."""

    def __init__(
        self,
        root: Path,
        settings: EngineSettings,
        optimize_threshold: int = 20_000,
        search_ef: int = 0,
        sealer: Sealer | None = None,
    ):
        self.root = root
        self.sealer = sealer
        self.settings = settings
        self.optimize_threshold = optimize_threshold
        self.search_ef = search_ef
        self._engines: dict[int, ShardEngine] = {}
        self._lock = threading.Lock()

    def shard(self, shard_id: int) -> ShardEngine:
        """The engine of ``shard_id``, opening (or creating) it if needed."""
        with self._lock:
            engine = self._engines.get(shard_id)
            if engine is None:
                engine = ShardEngine(
                    self.root / f"shard-{shard_id:04d}",
                    self.settings,
                    self.optimize_threshold,
                    self.search_ef,
                    sealer=self.sealer,
                )
                self._engines[shard_id] = engine
            return engine

    def open_shards(self) -> dict[int, ShardEngine]:
        """The engines opened so far."""
        with self._lock:
            return dict(self._engines)

    def close(self) -> None:
        """Close every open engine."""
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.close()
