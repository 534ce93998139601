"""The distributed mode's backends without the extra that brings them: a clear refusal."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from shardrag.blobs import open_blob_store
from shardrag.cache import open_result_cache
from shardrag.errors import InvalidParameter
from shardrag.registry import open_registry


@pytest.mark.parametrize(
    ("module", "open_backend"),
    [
        ("boto3", lambda tmp: open_blob_store(tmp, "s3://bucket/prefix")),
        ("redis", lambda tmp: open_result_cache(url="redis://127.0.0.1:6379/0")),
        ("psycopg", lambda tmp: open_registry(tmp, "postgresql://127.0.0.1/test")),
    ],
)
def test_a_backend_whose_extra_is_missing_names_the_extra(
    module: str, open_backend: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None entry makes the import fail as it does where the package is not installed.
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(InvalidParameter, match=r"pip install 'shardrag\[cluster\]'") as raised:
        open_backend(tmp_path)  # type: ignore[operator]
    assert raised.value.code == "invalid_parameter"
    assert raised.value.details["extra"] == "cluster"
