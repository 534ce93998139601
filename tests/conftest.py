"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from shardrag import Shardrag  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
CISI_DIR = SHARED / "datasets" / "cisi"


def require(condition: bool, reason: str) -> None:
    """Skip locally when a prerequisite is missing; fail under CI=true, where it must exist."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def rag(tmp_path: Path) -> Iterator[Shardrag]:
    """An embedded Shardrag on a fresh data dir with two shards."""
    instance = Shardrag.open(tmp_path / "data", shards=2)
    try:
        yield instance
    finally:
        instance.close()
