"""SQLAlchemy 2 models: workspaces and their members, users, personas, post threads, the turn tree,
jobs, the callback inbox, the activity log of posts and notices waiting for their user.

A workspace (a Discord server, a WeCom company, ``local`` for the console, a user's personal
workspace for Discord DMs) owns personas and products; their names are unique per workspace.

Platform ids are BigInteger (Discord snowflakes are 64-bit). Lists and parameters are JSON so
the same schema runs on SQLite and PostgreSQL. Turns point at their parent: undo moves a
thread's current turn to the parent and the next edit branches from there; nothing is
overwritten.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: the jobs the one-training-per-user index covers (the string of engine.specs.JobKind.TRAIN_PERSONA)
TRAINING_KIND = "train_persona"
TRAINING_UNFINISHED = f"kind = '{TRAINING_KIND}' AND status IN ('held', 'queued', 'running')"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON, list[dict[str, Any]]: JSON}


class TurnKind(StrEnum):
    GENERATE = "generate"
    EDIT = "edit"
    REGENERATE = "regenerate"
    VARIATION = "variation"
    VIDEO = "video"  # a clip of an approved image (params["video"] names the MP4)


class TurnStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobStatus(StrEnum):
    HELD = "held"  # stored, waiting for its platform thread to exist before it is queued
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


class ThreadStatus(StrEnum):
    OPEN = "open"
    IN_REVIEW = "in_review"  # submitted by its author, waiting for a reviewer (workspace review on)
    APPROVED = "approved"
    CANCELLED = "cancelled"


class WorkspaceRole(StrEnum):
    ADMIN = "admin"
    REVIEWER = "reviewer"
    MEMBER = "member"

    @property
    def reviews(self) -> bool:
        """Admins count as reviewers."""
        return self in (WorkspaceRole.ADMIN, WorkspaceRole.REVIEWER)


class Workspace(Base):
    """Where personas and products live: ``(platform, external_id)`` is the Discord guild id, the
    WeCom corp id, ``local`` (console), or ``dm:<user id>`` for a personal workspace."""

    __tablename__ = "workspaces"
    __table_args__ = (UniqueConstraint("platform", "external_id", name="uq_workspaces_platform_external"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200), default="")
    #: a user's own workspace (Discord DMs): its user is its admin
    personal: Mapped[bool] = mapped_column(Boolean, default=False)
    #: review on: an author's approval submits the post, a reviewer approves it
    review: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Membership(Base):
    """A user's role in a workspace; a user without a row is a member once they act there."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("workspace_id", "user_id", name="uq_memberships_workspace_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16), default=WorkspaceRole.MEMBER)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Activity(Base):
    """One entry of a post's activity log: who did what (created, edited, submitted, approved,
    sent back ...), to which turn, when, with a detail (the instruction, the reason)."""

    __tablename__ = "activity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    thread_id: Mapped[int] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"), index=True)
    turn_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Notice(Base):
    """A message for a user, shown with the answer to their next command (then marked shown)."""

    __tablename__ = "notices"
    __table_args__ = (Index("ix_notices_user_shown", "user_id", "shown_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    shown_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("platform", "platform_user_id", name="uq_users_platform_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    platform_user_id: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: the user's current post session on platforms without threads (WeCom, console)
    current_thread_id: Mapped[int | None] = mapped_column(
        ForeignKey("threads.id", use_alter=True, name="fk_users_current_thread", ondelete="SET NULL"),
        nullable=True,
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Persona(Base):
    __tablename__ = "personas"
    __table_args__ = (
        # a name is unique among a workspace's live personas; deleted ones free the name
        # compared as name_key (NFKC + casefold, done in Python: the same on every database)
        Index(
            "uq_personas_workspace_name_key_live",
            "workspace_id",
            "name_key",
            unique=True,
            sqlite_where="deleted_at IS NULL",
            postgresql_where="deleted_at IS NULL",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    #: the persona's creator (who may delete or train it, besides admins)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    #: storage.names.name_key(name): what lookups and the unique index compare
    name_key: Mapped[str] = mapped_column(String(256))
    archetype: Mapped[str] = mapped_column(String(64))
    #: [[lora name, weight], ...]
    lora_mix: Mapped[list[Any]] = mapped_column(JSON, default=list)
    seed: Mapped[int] = mapped_column(BigInteger)
    reference_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    face_embedding: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    #: blob key of the consented photo a persona was created from (``/persona create-from-photo``)
    photo_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | ready | failed
    #: trained LoRA versions (storage.persona_versions); 0 = the blend is in use
    versions: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")
    active_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class InboxState(StrEnum):
    PENDING = "pending"  # answered 200 to the platform, not handled yet
    REPLYING = "replying"  # handled; some of its reply (``InboxItem.reply``) is not sent yet
    DONE = "done"  # handled and answered: kept as a dedupe key until purged


class InboxItem(Base):
    """A platform callback that was acknowledged: stored in the step that decides to answer 200,
    handled from here, marked done. ``(platform, key)`` is unique: the row is the dedupe key too."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("platform", "key", name="uq_inbox_platform_key"),
        Index("ix_inbox_platform_state", "platform", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=InboxState.PENDING)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: the front end handling the row (its lease: :class:`InboxOwner`), and until when the row is
    #: held whatever that lease says: one lease from its accept or take-over (not renewed)
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: the outbox: messages of the reply not sent yet (JSON, in order), failed sends, next try
    reply: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    reply_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class InboxOwner(Base):
    """A front end's lease on its inbox rows of one platform: renewed (one row) while it is alive;
    once it lapsed, a survivor takes its unfinished rows over (storage.inbox.Inbox.take_over)."""

    __tablename__ = "inbox_owners"

    platform: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), primary_key=True)
    lease_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Thread(Base):
    """A post: one conversation thread with its persona, settings and current turn."""

    __tablename__ = "threads"
    __table_args__ = (Index("ix_threads_platform_thread", "platform", "thread_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: platform thread id (Discord thread channel); NULL on platforms keyed by user (WeCom, console)
    thread_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    #: the post's author
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    persona_id: Mapped[int] = mapped_column(ForeignKey("personas.id"))
    title: Mapped[str] = mapped_column(String(200), default="")
    prompt: Mapped[str] = mapped_column(Text, default="")
    scene_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: the post's references, used by every turn: [{"role", "key", "name"}, ...]
    references: Mapped[list[Any]] = mapped_column(JSON, default=list)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=ThreadStatus.OPEN)
    #: the turn submitted for review (status in_review)
    review_turn_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    current_turn_id: Mapped[int | None] = mapped_column(
        ForeignKey("turns.id", use_alter=True, name="fk_threads_current_turn", ondelete="SET NULL"),
        nullable=True,
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Turn(Base):
    """One step of a post. ``image_keys`` is always the post's whole image list after the step."""

    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    thread_id: Mapped[int] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("turns.id"), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    instruction: Mapped[str] = mapped_column(Text, default="")
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    image_keys: Mapped[list[Any]] = mapped_column(JSON, default=list)
    identity_scores: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: the references the turn's job used: [{"role", "key" (sha256), "name"}, ...]
    references: Mapped[list[Any]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default=TurnStatus.PENDING)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), nullable=True, index=True)
    approved: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Product(Base):
    """A product image in its workspace's library, by name (``/product add <name>``)."""

    __tablename__ = "products"
    __table_args__ = (
        Index(
            "uq_products_workspace_name_live",
            "workspace_id",
            "name_key",
            unique=True,
            sqlite_where="deleted_at IS NULL",
            postgresql_where="deleted_at IS NULL",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    #: who added it (they or an admin may delete it)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    #: ``storage.names.name_key(name)``: names are unique and looked up under this key
    name_key: Mapped[str] = mapped_column(String(64))
    image_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_user_status", "user_id", "status"),
        Index("ix_jobs_platform_delivered", "platform", "delivered"),  # the delivery sweep's query
        # at most one unfinished training per user, kept by the database (not check-then-act)
        Index(
            "uq_jobs_one_training_per_user",
            "user_id",
            unique=True,
            sqlite_where=text(TRAINING_UNFINISHED),
            postgresql_where=text(TRAINING_UNFINISHED),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    thread_id: Mapped[int | None] = mapped_column(
        ForeignKey("threads.id", ondelete="SET NULL"), nullable=True, index=True
    )
    platform: Mapped[str] = mapped_column(String(32), default="")
    #: where a result without a thread goes (a persona portrait): the channel it was asked in
    channel_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    #: set while a front end sends the result; a claim left by a crashed front end is taken over
    delivery_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: failed sends so far, and when the next may be tried (backoff)
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivery_retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
