"""The HNSW search effort of dense queries: fixed by a setting, or by the shard's size."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardrag.config import Settings
from shardrag.engine import EngineSettings, ShardEngine
from shardrag.engine.shard import SEARCH_EFFORT_BEYOND, search_effort_for
from shardrag.errors import InvalidParameter
from shardrag.models import Chunk, EmbeddedChunk, SearchMode, ShardQuery


def test_the_effort_grows_with_the_shard_in_steps() -> None:
    assert search_effort_for(0) == search_effort_for(150_000) == 128
    assert search_effort_for(150_001) == search_effort_for(500_000) == 256
    assert search_effort_for(500_001) == search_effort_for(10**8) == SEARCH_EFFORT_BEYOND == 768


def test_a_fixed_effort_is_used_as_set_and_auto_follows_the_size(tmp_path: Path) -> None:
    fixed = ShardEngine(tmp_path / "fixed", EngineSettings(dimension=2), search_ef=40)
    auto = ShardEngine(tmp_path / "auto", EngineSettings(dimension=2))
    try:
        assert fixed._effort() == 40
        assert auto._effort() == search_effort_for(0)
        chunk = EmbeddedChunk(Chunk(0, "alpha", "", "h", 1), [1.0, 0.0])
        for engine in (fixed, auto):
            engine.upsert("acme", "doc", 1, [chunk], {}, None)
            engine.commit("acme", "doc", 1)
            hits = engine.search(ShardQuery("acme", SearchMode.DENSE, 1, "", [1.0, 0.0]))
            assert [h.doc_id for h in hits] == ["doc"]
    finally:
        fixed.close()
        auto.close()


def test_the_setting_is_validated() -> None:
    Settings(search_ef=0).validate()
    with pytest.raises(InvalidParameter, match="search_ef=-1"):
        Settings(search_ef=-1).validate()
