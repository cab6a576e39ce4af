"""The repository's workspaces: workspaces by platform key, memberships with roles, the review
switch, and notices waiting for a user's next command.

Keys follow storage.workspace_keys. :class:`storage.repository.Store` includes these methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from sqlalchemy import Select, and_, bindparam, select, update
from sqlalchemy.exc import IntegrityError

from storage.db import Database
from storage.models import Membership, Notice, User, Workspace, WorkspaceRole, utcnow
from storage.rows import found
from storage.workspace_keys import UNBOUND, WorkspaceKey, home_key


class Member(NamedTuple):
    user: User
    role: WorkspaceRole


class KnownContext(NamedTuple):
    """What a known user's event needs of storage, read at once (:meth:`WorkspaceRecords.known_context`)."""

    user: User
    workspace: Workspace | None  # None: not made yet
    role: WorkspaceRole | None  # None: not a member yet
    notices: bool  # notices wait to be shown


def _known_context_query() -> Select[Any]:
    """Built once (with bind parameters): building it anew cost as much as running it."""
    waiting = select(Notice.id).where(Notice.user_id == User.id, Notice.shown_at.is_(None)).exists()
    platform = bindparam("platform")
    return (
        select(User, Workspace, Membership.role, waiting)
        .select_from(User)
        .outerjoin(Workspace, and_(Workspace.platform == platform, Workspace.external_id == bindparam("external_id")))
        .outerjoin(Membership, and_(Membership.workspace_id == Workspace.id, Membership.user_id == User.id))
        .where(User.platform == platform, User.platform_user_id == bindparam("platform_user_id"))
    )


_KNOWN_CONTEXT = _known_context_query()


class WorkspaceRecords:
    db: Database

    async def known_context(self, platform: str, platform_user_id: str, external_id: str) -> KnownContext | None:
        """The user, the workspace ``(platform, external_id)``, the user's role there and whether
        notices wait for them, in one SELECT (every command asks: one trip instead of four);
        None for a user not seen yet."""
        params = {"platform": platform, "platform_user_id": platform_user_id, "external_id": external_id}
        async with self.db.read() as s:
            row = (await s.execute(_KNOWN_CONTEXT, params)).first()
        if row is None:
            return None
        user, workspace, role, notices = row
        return KnownContext(user, workspace, WorkspaceRole(role) if role is not None else None, bool(notices))

    # -- workspaces --------------------------------------------------------------------------
    async def workspace(self, platform: str, external_id: str, name: str = "", personal: bool = False) -> Workspace:
        """The workspace with this key, created on first sight. A platform's unbound workspace
        (its id was unknown when it was made, storage.workspace_keys.UNBOUND) is bound to the
        first id asked for instead of making a new one."""
        key = WorkspaceKey(platform, str(external_id), personal)
        known = await self._find_workspace(key.platform, key.external_id)
        if known is None and key.external_id != UNBOUND and not personal:
            known = await self._bind_unbound(key)
        if known is None:
            try:
                async with self.db.session() as s:
                    known = Workspace(
                        platform=key.platform, external_id=key.external_id, name=name, personal=personal, review=False
                    )
                    s.add(known)
                    await s.flush()
                    return known
            except IntegrityError:  # made by a concurrent first event in the same place
                known = found(await self._find_workspace(key.platform, key.external_id), "workspace", key)
        if name and known.name != name:
            async with self.db.session() as s:
                await s.execute(update(Workspace).where(Workspace.id == known.id).values(name=name))
            known.name = name
        return known

    async def _find_workspace(self, platform: str, external_id: str) -> Workspace | None:
        async with self.db.read() as s:
            return await s.scalar(
                select(Workspace).where(Workspace.platform == platform, Workspace.external_id == external_id)
            )

    async def _bind_unbound(self, key: WorkspaceKey) -> Workspace | None:
        async with self.db.session() as s:
            unbound = await s.scalar(
                select(Workspace).where(Workspace.platform == key.platform, Workspace.external_id == UNBOUND)
            )
            if unbound is None:
                return None
            unbound.external_id = key.external_id
            return unbound

    async def get_workspace(self, workspace_id: int) -> Workspace:
        async with self.db.read() as s:
            return found(await s.get(Workspace, workspace_id), "workspace", workspace_id)

    async def home_workspace(self, user: User, homes: Mapping[str, str] | None = None) -> Workspace:
        """The workspace a user's owner-keyed personas and products live in (storage.workspace_keys)."""
        key = home_key(user.platform, user.platform_user_id, homes)
        workspace = await self.workspace(key.platform, key.external_id, personal=key.personal)
        await self.join_workspace(workspace.id, user.id, WorkspaceRole.ADMIN if key.personal else WorkspaceRole.MEMBER)
        return workspace

    async def last_workspace_of(self, user_id: int) -> Workspace | None:
        """The workspace the user joined last (for a studio link that names none)."""
        async with self.db.read() as s:
            return await s.scalar(
                select(Workspace)
                .join(Membership, Membership.workspace_id == Workspace.id)
                .where(Membership.user_id == user_id)
                .order_by(Membership.id.desc())
                .limit(1)
            )

    async def set_review(self, workspace_id: int, on: bool) -> None:
        async with self.db.session() as s:
            await s.execute(update(Workspace).where(Workspace.id == workspace_id).values(review=on))

    # -- memberships -------------------------------------------------------------------------
    async def role_of(self, workspace_id: int, user_id: int) -> WorkspaceRole | None:
        """The user's stored role in the workspace, ``None`` when they never joined it."""
        async with self.db.read() as s:
            role = await s.scalar(
                select(Membership.role).where(Membership.workspace_id == workspace_id, Membership.user_id == user_id)
            )
        return WorkspaceRole(role) if role is not None else None

    async def join_workspace(
        self, workspace_id: int, user_id: int, role: WorkspaceRole = WorkspaceRole.MEMBER
    ) -> WorkspaceRole:
        """Make the user a member (with ``role``) unless they are one: returns their role."""
        known = await self.role_of(workspace_id, user_id)
        if known is not None:
            return known
        try:
            async with self.db.session() as s:
                s.add(Membership(workspace_id=workspace_id, user_id=user_id, role=role))
        except IntegrityError:  # joined by a concurrent event of the same user
            return found(await self.role_of(workspace_id, user_id), "membership", (workspace_id, user_id))
        return role

    async def set_role(self, workspace_id: int, user_id: int, role: WorkspaceRole) -> None:
        await self.join_workspace(workspace_id, user_id, role)
        async with self.db.session() as s:
            await s.execute(
                update(Membership)
                .where(Membership.workspace_id == workspace_id, Membership.user_id == user_id)
                .values(role=role)
            )

    async def members(self, workspace_id: int) -> list[Member]:
        """The workspace's members, admins first, then reviewers, then members (each by joining)."""
        order = {WorkspaceRole.ADMIN: 0, WorkspaceRole.REVIEWER: 1, WorkspaceRole.MEMBER: 2}
        async with self.db.read() as s:
            rows = (
                await s.execute(
                    select(User, Membership.role)
                    .join(Membership, Membership.user_id == User.id)
                    .where(Membership.workspace_id == workspace_id)
                    .order_by(Membership.id)
                )
            ).all()
        members = [Member(user, WorkspaceRole(role)) for user, role in rows]
        return sorted(members, key=lambda m: order[m.role])

    async def reviewers(self, workspace_id: int) -> list[User]:
        """Who is asked to review the workspace's posts: its reviewers and admins."""
        return [m.user for m in await self.members(workspace_id) if m.role.reviews]

    # -- notices -----------------------------------------------------------------------------
    async def add_notice(self, user_id: int, text: str) -> None:
        async with self.db.session() as s:
            s.add(Notice(user_id=user_id, text=text))

    async def take_notices(self, user_id: int) -> list[str]:
        """The user's notices not shown yet, oldest first; they count as shown from now on. (Asked
        on every event: a read first, a write only when there is something to show.)"""
        async with self.db.read() as s:
            waiting = await s.scalar(
                select(Notice.id).where(Notice.user_id == user_id, Notice.shown_at.is_(None)).limit(1)
            )
        if waiting is None:
            return []
        async with self.db.session() as s:
            rows = list(
                await s.scalars(
                    select(Notice)
                    .where(Notice.user_id == user_id, Notice.shown_at.is_(None))
                    .order_by(Notice.id)
                    .with_for_update(skip_locked=True)  # two commands at once show a notice once
                )
            )
            now = utcnow()
            for notice in rows:
                notice.shown_at = now
            return [notice.text for notice in rows]
