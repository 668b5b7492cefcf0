"""The alembic migrations build exactly the schema the code declares (ipam/store/schema.py),
on SQLite and on PostgreSQL: a column or index added to one and not the other fails here."""
from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from ipam.migrate import current, upgrade
from ipam.store import schema


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        upgrade(engine)
        assert current(engine) == "0004"
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), schema.metadata))
    finally:
        engine.dispose()


def test_migrations_match_the_schema_on_sqlite(tmp_path: Path) -> None:
    assert _diff(f"sqlite:///{tmp_path}/m.db") == []


@pytest.mark.postgres
def test_migrations_match_the_schema_on_postgres(pg_url: str) -> None:
    assert _diff(pg_url) == []
