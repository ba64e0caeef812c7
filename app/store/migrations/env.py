"""Alembic environment: runs on the connection the store hands over (see store.db.migrate)."""

from alembic import context

from app.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the store always provides one
    raise RuntimeError("run migrations through app.store.db.migrate()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
