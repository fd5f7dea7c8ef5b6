"""The schema before migrations (sgid-bench 0.1.0, SQLite ``user_version`` 1).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("config_hash", sa.String(64), nullable=False, index=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(200), nullable=False, index=True),
        sa.Column("backbone", sa.String(100), nullable=False, index=True),
        sa.Column("dataset", sa.String(500), nullable=False, index=True),
        sa.Column("profile", sa.String(20), nullable=False),
        sa.Column("status", sa.String(10), nullable=False, index=True),
        sa.Column("error", sa.Text()),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("tiny_models", sa.Boolean(), nullable=False),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("git_revision", sa.String(64)),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer()),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("wall_time_s", sa.Float()),
        sa.Column("top1", sa.Float()),
        sa.Column("top5", sa.Float()),
        sa.Column("loss", sa.Float()),
        sa.Column("per_class", sa.JSON()),
        sa.Column("extra", sa.JSON()),
        sa.UniqueConstraint("config_hash", "seed", name="uq_run_config_seed"),
    )
    # A store whose runs table was dropped may keep its generation records: keep them.
    if not sa.inspect(op.get_bind()).has_table("generations"):
        op.create_table(
            "generations",
            sa.Column("id", sa.Integer(), primary_key=True),
            sa.Column("cache_key", sa.String(64), nullable=False, unique=True),
            sa.Column("method", sa.String(200), nullable=False, index=True),
            sa.Column("dataset", sa.String(500), nullable=False),
            sa.Column("seed", sa.Integer(), nullable=False),
            sa.Column("params", sa.JSON(), nullable=False),
            sa.Column("models", sa.JSON(), nullable=False),
            sa.Column("path", sa.Text(), nullable=False),
            sa.Column("images", sa.Integer(), nullable=False),
            sa.Column("status", sa.String(10), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("finished_at", sa.DateTime(timezone=True)),
        )


def downgrade() -> None:
    op.drop_table("generations")
    op.drop_table("runs")
