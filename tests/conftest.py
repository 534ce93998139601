"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from shardrag import Shardrag


@pytest.fixture
def rag(tmp_path: Path) -> Iterator[Shardrag]:
    """An embedded Shardrag on a fresh data dir with two shards."""
    instance = Shardrag.open(tmp_path / "data", shards=2)
    try:
        yield instance
    finally:
        instance.close()
