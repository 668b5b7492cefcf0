"""Alembic environment: always run with a connection handed in by ipam.migrate."""
from __future__ import annotations

from alembic import context

from ipam.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through ipam.migrate.upgrade(engine)")
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
