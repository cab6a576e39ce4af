"""workspaces, memberships with roles, the activity log of posts, notices; personas, products and
posts belong to a workspace (names unique per workspace)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

Every user's personas, products and posts move into the user's home workspace
(storage.workspace_keys.home_key: console ``local``, the WeCom company, a Discord user's personal
workspace unless the installation names its one server). The home keys may be given through
``Config.attributes["home_workspaces"]`` (``{"wecom": corp id, "discord": guild id}``); a WeCom
company with an unknown id is stored unbound and bound by its first event. Nothing is lost: a
live name that clashes inside a workspace (two creators' ``Mia``) keeps its row and gets a
``-2``, ``-3`` ... suffix (the oldest keeps the name), and the owner finds a notice with the
answer to their next command. Existing posts get a ``created`` entry in their activity log.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from storage.names import name_key
from storage.workspace_keys import home_key

revision = "0007"
down_revision = "0006"  # after 0006 (inbox leases, outbox, one training per user)
branch_labels = None
depends_on = None

_users = sa.table(
    "users",
    sa.column("id", sa.Integer),
    sa.column("platform", sa.String),
    sa.column("platform_user_id", sa.String),
    sa.column("display_name", sa.String),
)
_workspaces = sa.table(
    "workspaces",
    sa.column("id", sa.Integer),
    sa.column("platform", sa.String),
    sa.column("external_id", sa.String),
    sa.column("name", sa.String),
    sa.column("personal", sa.Boolean),
    sa.column("review", sa.Boolean),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_memberships = sa.table(
    "memberships",
    sa.column("workspace_id", sa.Integer),
    sa.column("user_id", sa.Integer),
    sa.column("role", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_notices = sa.table(
    "notices",
    sa.column("user_id", sa.Integer),
    sa.column("text", sa.Text),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_activity = sa.table(
    "activity",
    sa.column("thread_id", sa.Integer),
    sa.column("user_id", sa.Integer),
    sa.column("action", sa.String),
    sa.column("detail", sa.Text),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_threads = sa.table(
    "threads",
    sa.column("id", sa.Integer),
    sa.column("owner_id", sa.Integer),
    sa.column("workspace_id", sa.Integer),
    sa.column("prompt", sa.Text),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def _named(table: str) -> sa.TableClause:
    return sa.table(
        table,
        sa.column("id", sa.Integer),
        sa.column("owner_id", sa.Integer),
        sa.column("workspace_id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("name_key", sa.String),
        sa.column("deleted_at", sa.DateTime(timezone=True)),
    )


def _create_tables() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("personal", sa.Boolean, nullable=False),
        sa.Column("review", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("platform", "external_id", name="uq_workspaces_platform_external"),
    )
    op.create_table(
        "memberships",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("workspace_id", sa.Integer, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("workspace_id", "user_id", name="uq_memberships_workspace_user"),
    )
    op.create_index("ix_memberships_workspace_id", "memberships", ["workspace_id"])
    op.create_index("ix_memberships_user_id", "memberships", ["user_id"])
    op.create_table(
        "activity",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("thread_id", sa.Integer, sa.ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
        sa.Column("turn_id", sa.Integer, nullable=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_activity_thread_id", "activity", ["thread_id"])
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shown_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_notices_user_shown", "notices", ["user_id", "shown_at"])


def _homes(bind: Any, homes: Mapping[str, str]) -> dict[int, int]:
    """Each user's home workspace id (made here), the user a member of it (admin of a personal one)."""
    now = datetime.now(UTC)
    made: dict[tuple[str, str], int] = {}
    home_of: dict[int, int] = {}
    for user in bind.execute(sa.select(_users).order_by(_users.c.id)).all():
        key = home_key(user.platform, user.platform_user_id, homes)
        if (key.platform, key.external_id) not in made:
            name = f"{user.display_name or user.platform_user_id} (personal)" if key.personal else key.external_id
            made[(key.platform, key.external_id)] = bind.execute(
                sa.insert(_workspaces)
                .values(
                    platform=key.platform,
                    external_id=key.external_id,
                    name=name or key.platform,
                    personal=key.personal,
                    review=False,
                    created_at=now,
                )
                .returning(_workspaces.c.id)
            ).scalar_one()
        home_of[user.id] = made[(key.platform, key.external_id)]
        role = "admin" if key.personal else "member"
        bind.execute(
            sa.insert(_memberships).values(workspace_id=home_of[user.id], user_id=user.id, role=role, created_at=now)
        )
    return home_of


def _move(bind: Any, table: str, what: str, home_of: Mapping[int, int]) -> None:
    """Put every row of ``table`` in its owner's home; suffix live names that clash there."""
    rows = _named(table)
    taken: set[tuple[int, str]] = set()
    now = datetime.now(UTC)
    for row in bind.execute(sa.select(rows).order_by(rows.c.id)).all():
        workspace_id = home_of[row.owner_id]
        name, key = row.name, row.name_key
        if row.deleted_at is None:
            suffix = 2
            while (workspace_id, key) in taken:
                name, suffix = f"{row.name}-{suffix}", suffix + 1
                key = name_key(name)
            taken.add((workspace_id, key))
            if name != row.name:
                text = (
                    f"Your {what} “{row.name}” is now called “{name}”: {what}s belong to the team's workspace now,"
                    f" and another member's {what} there already had that name."
                )
                bind.execute(sa.insert(_notices).values(user_id=row.owner_id, text=text, created_at=now))
        bind.execute(
            sa.update(rows).where(rows.c.id == row.id).values(workspace_id=workspace_id, name=name, name_key=key)
        )


def _tell_personal_owners(bind: Any, home_of: Mapping[int, int]) -> None:
    """Discord users whose personas went to their personal workspace hear where to find them."""
    personal = {row.id for row in bind.execute(sa.select(_workspaces.c.id).where(_workspaces.c.personal)).all()}
    owners: set[int] = set()
    for table in ("personas", "products"):
        rows = _named(table)
        owners |= {r.owner_id for r in bind.execute(sa.select(rows.c.owner_id).where(rows.c.deleted_at.is_(None)))}
    text = (
        "Personas and products now belong to a workspace (a server, or your DMs with the bot). Yours are in"
        " your personal workspace: use them in a DM with the bot; each server has its own."
    )
    now = datetime.now(UTC)
    for owner in sorted(o for o in owners if home_of[o] in personal):
        bind.execute(sa.insert(_notices).values(user_id=owner, text=text, created_at=now))


def _bind_to_workspaces(table: str, old_index: str, new_index: str | None) -> None:
    with op.batch_alter_table(table) as batch:
        batch.alter_column("workspace_id", existing_type=sa.Integer, nullable=False)
        batch.create_foreign_key(f"fk_{table}_workspace", "workspaces", ["workspace_id"], ["id"], ondelete="CASCADE")
    op.create_index(f"ix_{table}_workspace_id", table, ["workspace_id"])
    if new_index is not None:
        op.drop_index(old_index, table_name=table)
        op.create_index(
            new_index,
            table,
            ["workspace_id", "name_key"],
            unique=True,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )


def upgrade() -> None:
    _create_tables()
    for table in ("personas", "products", "threads"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("workspace_id", sa.Integer, nullable=True))
            if table == "threads":
                batch.add_column(sa.Column("review_turn_id", sa.Integer, nullable=True))
    bind = op.get_bind()
    home_of = _homes(bind, context.config.attributes.get("home_workspaces") or {})
    _move(bind, "personas", "persona", home_of)
    _move(bind, "products", "product", home_of)
    _tell_personal_owners(bind, home_of)
    for thread in bind.execute(sa.select(_threads).order_by(_threads.c.id)).all():
        bind.execute(
            sa.update(_threads).where(_threads.c.id == thread.id).values(workspace_id=home_of[thread.owner_id])
        )
        bind.execute(
            sa.insert(_activity).values(
                thread_id=thread.id,
                user_id=thread.owner_id,
                action="created",
                detail=thread.prompt or "",
                created_at=thread.created_at,
            )
        )
    _bind_to_workspaces("personas", "uq_personas_owner_name_key_live", "uq_personas_workspace_name_key_live")
    _bind_to_workspaces("products", "uq_products_owner_name_live", "uq_products_workspace_name_live")
    _bind_to_workspaces("threads", "", None)


def _unbind(table: str, new_index: str | None, old_index: str) -> None:
    """Back to per-owner names (a clash per owner, possible once names were per workspace, gets a suffix)."""
    if new_index is not None:
        op.drop_index(new_index, table_name=table)
        rows = _named(table)
        bind = op.get_bind()
        taken: set[tuple[int, str]] = set()
        for row in bind.execute(sa.select(rows).where(rows.c.deleted_at.is_(None)).order_by(rows.c.id)).all():
            name, key, suffix = row.name, row.name_key, 2
            while (row.owner_id, key) in taken:
                name, suffix = f"{row.name}-{suffix}", suffix + 1
                key = name_key(name)
            taken.add((row.owner_id, key))
            if name != row.name:
                bind.execute(sa.update(rows).where(rows.c.id == row.id).values(name=name, name_key=key))
    op.drop_index(f"ix_{table}_workspace_id", table_name=table)
    with op.batch_alter_table(table) as batch:
        batch.drop_constraint(f"fk_{table}_workspace", type_="foreignkey")
        batch.drop_column("workspace_id")
        if table == "threads":
            batch.drop_column("review_turn_id")
    if new_index is not None:
        op.create_index(
            old_index,
            table,
            ["owner_id", "name_key"],
            unique=True,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )


def downgrade() -> None:
    _unbind("threads", None, "")
    _unbind("products", "uq_products_workspace_name_live", "uq_products_owner_name_live")
    _unbind("personas", "uq_personas_workspace_name_key_live", "uq_personas_owner_name_key_live")
    op.drop_index("ix_notices_user_shown", table_name="notices")
    op.drop_table("notices")
    op.drop_index("ix_activity_thread_id", table_name="activity")
    op.drop_table("activity")
    op.drop_index("ix_memberships_user_id", table_name="memberships")
    op.drop_index("ix_memberships_workspace_id", table_name="memberships")
    op.drop_table("memberships")
    op.drop_table("workspaces")
