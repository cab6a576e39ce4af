"""initial schema: users, personas, threads, turns, jobs

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("platform_user_id", sa.String(128), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("current_thread_id", sa.Integer, nullable=True),
        _ts("created_at"),
        sa.UniqueConstraint("platform", "platform_user_id", name="uq_users_platform_user"),
    )
    op.create_table(
        "personas",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("archetype", sa.String(64), nullable=False),
        sa.Column("lora_mix", sa.JSON, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("reference_key", sa.String(64), nullable=True),
        sa.Column("face_embedding", sa.JSON, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("created_at"),
        _ts("deleted_at", nullable=True),
    )
    op.create_index("ix_personas_owner_id", "personas", ["owner_id"])
    op.create_index(
        "uq_personas_owner_name_live",
        "personas",
        ["owner_id", "name"],
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "threads",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.BigInteger, nullable=True),
        sa.Column("thread_id", sa.BigInteger, nullable=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("persona_id", sa.Integer, sa.ForeignKey("personas.id"), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("scene_key", sa.String(64), nullable=True),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("current_turn_id", sa.Integer, nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_index("ix_threads_owner_id", "threads", ["owner_id"])
    op.create_index("ix_threads_platform_thread", "threads", ["platform", "thread_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("thread_id", sa.Integer, sa.ForeignKey("threads.id", ondelete="SET NULL"), nullable=True),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.BigInteger, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("delivered", sa.Boolean, nullable=False),
        _ts("created_at"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
    )
    op.create_index("ix_jobs_user_status", "jobs", ["user_id", "status"])
    op.create_index("ix_jobs_thread_id", "jobs", ["thread_id"])
    op.create_table(
        "turns",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("thread_id", sa.Integer, sa.ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("turns.id"), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("instruction", sa.Text, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("image_keys", sa.JSON, nullable=False),
        sa.Column("identity_scores", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id"), nullable=True),
        sa.Column("approved", sa.Boolean, nullable=False),
        _ts("created_at"),
    )
    op.create_index("ix_turns_thread_id", "turns", ["thread_id"])
    op.create_index("ix_turns_parent_id", "turns", ["parent_id"])
    op.create_index("ix_turns_job_id", "turns", ["job_id"])
    # The two back-pointers close cycles (users <-> threads <-> turns): added once both exist.
    with op.batch_alter_table("users") as batch:
        batch.create_foreign_key(
            "fk_users_current_thread", "threads", ["current_thread_id"], ["id"], ondelete="SET NULL"
        )
    with op.batch_alter_table("threads") as batch:
        batch.create_foreign_key("fk_threads_current_turn", "turns", ["current_turn_id"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    with op.batch_alter_table("threads") as batch:
        batch.drop_constraint("fk_threads_current_turn", type_="foreignkey")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("fk_users_current_thread", type_="foreignkey")
    for table in ("turns", "jobs", "threads", "personas", "users"):
        op.drop_table(table)
