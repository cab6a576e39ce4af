"""jobs.delivery_*: delivery claims that survive a front-end crash, retries with backoff

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("delivery_started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("delivery_attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("delivery_retry_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_jobs_platform_delivered", "jobs", ["platform", "delivered"])


def downgrade() -> None:
    op.drop_index("ix_jobs_platform_delivered", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("delivery_retry_at")
        batch.drop_column("delivery_attempts")
        batch.drop_column("delivery_started_at")
