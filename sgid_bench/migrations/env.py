"""Alembic environment: migrations run on the connection the store opened (inside its
lock: SQLite ``BEGIN IMMEDIATE`` or a PostgreSQL advisory lock), never on a URL of their
own."""

from alembic import context

from sgid_bench.store import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
