"""Claims with a heartbeat and a token; 64-bit seeds; unbounded dataset names (paths);
the table that says which sgid-bench wrote the schema.

Revision ID: 0002
Revises: 0001
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WIDENED: list[tuple[str, str, sa.types.TypeEngine[Any], sa.types.TypeEngine[Any]]] = [
    ("runs", "seed", sa.Integer(), sa.BigInteger()),
    ("runs", "dataset", sa.String(500), sa.Text()),
    ("generations", "seed", sa.Integer(), sa.BigInteger()),
    ("generations", "dataset", sa.String(500), sa.Text()),
]


def upgrade() -> None:
    op.add_column("runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True)))
    op.add_column("runs", sa.Column("claim_token", sa.String(32)))
    op.add_column("runs", sa.Column("pid_scope", sa.String(100)))
    op.create_table("sgid_bench_info",
                    sa.Column("key", sa.String(50), primary_key=True),
                    sa.Column("value", sa.Text(), nullable=False))
    # SQLite types are affinities: INTEGER already holds 64 bits and VARCHAR(500) any
    # length, so only databases that enforce them (PostgreSQL) need the change.
    if op.get_bind().dialect.name != "sqlite":
        for table, column, old, new in WIDENED:
            op.alter_column(table, column, type_=new, existing_type=old, existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        for table, column, old, new in WIDENED:
            op.alter_column(table, column, type_=old, existing_type=new, existing_nullable=False)
    op.drop_table("sgid_bench_info")
    for column in ("pid_scope", "claim_token", "heartbeat_at"):
        op.drop_column("runs", column)
