"""inbox of acknowledged callbacks; personas.name_key (NFKC + casefold) unique per owner

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Existing live personas whose names collide under the new rule (``Mia`` and ``mia``) keep their
rows: the later ones get a ``-2``, ``-3`` ... suffix on name and key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.names import name_key

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("platform", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("platform", "key", name="uq_inbox_platform_key"),
    )
    op.create_index("ix_inbox_platform_state", "inbox", ["platform", "state"])

    with op.batch_alter_table("personas") as batch:
        batch.add_column(sa.Column("name_key", sa.String(256), nullable=True))
    personas = sa.table(
        "personas",
        sa.column("id", sa.Integer),
        sa.column("owner_id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("name_key", sa.String),
        sa.column("deleted_at", sa.DateTime),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(personas.c.id, personas.c.owner_id, personas.c.name, personas.c.deleted_at).order_by(personas.c.id)
    ).all()
    taken: set[tuple[int, str]] = set()
    for row in rows:
        name, key = row.name, name_key(row.name)
        if row.deleted_at is None:
            suffix = 2
            while (row.owner_id, key) in taken:
                name = f"{row.name}-{suffix}"
                key = name_key(name)
                suffix += 1
            taken.add((row.owner_id, key))
        bind.execute(sa.update(personas).where(personas.c.id == row.id).values(name=name, name_key=key))
    op.drop_index("uq_personas_owner_name_live", table_name="personas")
    with op.batch_alter_table("personas") as batch:
        batch.alter_column("name_key", existing_type=sa.String(256), nullable=False)
    op.create_index(
        "uq_personas_owner_name_key_live",
        "personas",
        ["owner_id", "name_key"],
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_personas_owner_name_key_live", table_name="personas")
    op.create_index(
        "uq_personas_owner_name_live",
        "personas",
        ["owner_id", "name"],
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    with op.batch_alter_table("personas") as batch:
        batch.drop_column("name_key")
    op.drop_index("ix_inbox_platform_state", table_name="inbox")
    op.drop_table("inbox")
