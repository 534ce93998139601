"""Choosing the registry from the setting ``registry_url``."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest
from tests.support import POSTGRES_URL, postgres_database, postgres_is_up, require

from shardrag.errors import InvalidParameter
from shardrag.registry import PostgresRegistry, open_registry
from shardrag.registry.sqlite import SqliteRegistry


def test_no_url_opens_the_data_dirs_sqlite_file(tmp_path: Path) -> None:
    with closing(open_registry(tmp_path)) as registry:
        assert isinstance(registry, SqliteRegistry)
        assert registry.path == tmp_path / "registry.sqlite3"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_postgres_url_opens_postgres(scheme: str) -> None:
    require(postgres_is_up(), f"no PostgreSQL server answers at {POSTGRES_URL}")
    with postgres_database() as url:
        _, rest = url.split("://", 1)
        with closing(open_registry(Path("unused"), f"{scheme}://{rest}")) as registry:
            assert isinstance(registry, PostgresRegistry)
            assert registry.list_tenants() == []


@pytest.mark.parametrize("url", ["mysql://admin:hunter2@db/registry", "registry.db", ""])
def test_any_other_url_is_an_invalid_setting(url: str) -> None:
    with pytest.raises(InvalidParameter, match="registry_url") as raised:
        open_registry(Path("unused"), url)
    assert raised.value.details["setting"] == "registry_url"
    assert "hunter2" not in raised.value.message
