"""personas.versions and personas.active_version: trained persona LoRA versions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("personas") as batch:
        batch.add_column(sa.Column("versions", sa.JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("active_version", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("personas") as batch:
        batch.drop_column("active_version")
        batch.drop_column("versions")
