"""references: products library, per-post and per-turn references, persona photos

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        # the name under storage.names.name_key (NFKC + casefold): unique and looked up exactly
        sa.Column("name_key", sa.String(64), nullable=False),
        sa.Column("image_key", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_products_owner_id", "products", ["owner_id"])
    op.create_index(
        "uq_products_owner_name_live",
        "products",
        ["owner_id", "name_key"],
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("references", sa.JSON, nullable=False, server_default="[]"))
    with op.batch_alter_table("threads") as batch:
        batch.add_column(sa.Column("references", sa.JSON, nullable=False, server_default="[]"))
    with op.batch_alter_table("personas") as batch:
        batch.add_column(sa.Column("photo_key", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("personas") as batch:
        batch.drop_column("photo_key")
    with op.batch_alter_table("threads") as batch:
        batch.drop_column("references")
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("references")
    op.drop_index("uq_products_owner_name_live", table_name="products")
    op.drop_index("ix_products_owner_id", table_name="products")
    op.drop_table("products")
