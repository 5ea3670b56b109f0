"""Alembic environment: runs on a connection handed over by ``pushgate.storage.migrate``."""

from __future__ import annotations

from alembic import context

from pushgate.storage.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - we always hand a connection over
    raise RuntimeError("run migrations through `pushgate migrate`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
