"""Spam is kept as evidence: its reason and client key; a form-and-time index for the budget.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("spam_reason", sa.String(64), nullable=True))
        batch.add_column(sa.Column("client_key", sa.String(64), nullable=True))
    op.create_index("ix_submissions_form_created", "submissions", ["form_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_submissions_form_created", table_name="submissions")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("client_key")
        batch.drop_column("spam_reason")
