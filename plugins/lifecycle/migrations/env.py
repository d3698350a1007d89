"""Alembic environment: runs on the connection handed over by ``lifecycle.model.db.migrate``."""

from __future__ import annotations

from alembic import context

from lifecycle.model.schema import engine_metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=engine_metadata,
    version_table="lifecycle_alembic_version",
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
