"""Trace problems name the records a trace could not be linked to: a wider column.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.alter_column(
            "trace_problem", type_=sa.String(64), existing_type=sa.String(32), nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.alter_column(
            "trace_problem", type_=sa.String(32), existing_type=sa.String(64), nullable=True
        )
