"""inbox owner, lease and outbox; at most one unfinished training per user

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

- ``inbox.owner`` / ``inbox.lease_until``: the front end handling a row and until when its claim
  holds; a survivor takes over rows whose lease lapsed (several front ends on one database).
- ``inbox.reply``: the messages of a handled row not sent yet (the outbox); the row is done only
  once it is empty. ``inbox.reply_attempts`` / ``inbox.retry_at``: failed sends and the next try.
- ``uq_jobs_one_training_per_user``: a unique partial index, so two ``/persona train`` arriving
  at two front ends at once cannot both be stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TRAINING_UNFINISHED = "kind = 'train_persona' AND status IN ('held', 'queued', 'running')"


def upgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("owner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reply", sa.JSON, nullable=True))
        batch.add_column(sa.Column("reply_attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    # a second unfinished training of one user (older data) would block the index: fail the newer
    op.execute(
        "UPDATE jobs SET status = 'failed', error = 'a second training of this user at the same time'"
        f" WHERE {TRAINING_UNFINISHED} AND id NOT IN (SELECT MIN(id) FROM jobs WHERE {TRAINING_UNFINISHED}"
        " GROUP BY user_id) AND user_id IS NOT NULL"
    )
    op.create_index(
        "uq_jobs_one_training_per_user",
        "jobs",
        ["user_id"],
        unique=True,
        sqlite_where=sa.text(TRAINING_UNFINISHED),
        postgresql_where=sa.text(TRAINING_UNFINISHED),
    )


def downgrade() -> None:
    op.drop_index("uq_jobs_one_training_per_user", table_name="jobs")
    with op.batch_alter_table("inbox") as batch:
        for column in ("retry_at", "reply_attempts", "reply", "lease_until", "owner"):
            batch.drop_column(column)
