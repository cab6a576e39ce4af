"""Database engine and sessions, and migrations to head.

SQLite runs in WAL mode and opens every write transaction (:meth:`Database.session`) with
``BEGIN IMMEDIATE``: a writer takes the write lock when its transaction starts, so two writers
never deadlock on a lock upgrade and wait (busy timeout) instead of failing with "database is
locked". Reads (:meth:`Database.read`) run in autocommit: in WAL mode each SELECT works on its
own snapshot and neither waits for writers nor makes them wait — what PostgreSQL's default READ
COMMITTED gives too, so the code holds to one rule on both. A read session that tries to write is
an error. PostgreSQL goes through asyncpg with the same code.

Every trip to SQLite is a hand-off to aiosqlite's connection thread and back (a SELECT is four:
cursor, execute, fetch, close), the main cost of a command on a busy front end: reads open no
transaction, the pool does not roll back a connection its session already ended, and
:meth:`Database.transaction` makes several writes one commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from storage import sqlite_driver

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: execution option naming a read-only connection (on SQLite it opens no transaction: autocommit)
READ_ONLY_OPTION = "persona_studio_read_only"
SQLITE_BUSY_TIMEOUT_S = 60.0
#: the PostgreSQL advisory lock key migrations run under ("persona-studio migrate", 63 bits)
MIGRATION_LOCK_KEY = 0x7073_6D69_6772_6174


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if not is_sqlite(url):
        return create_async_engine(url, pool_pre_ping=True, **kwargs)
    parsed = make_url(url)
    database = parsed.database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if parsed.drivername == "sqlite+aiosqlite":  # the same driver, one trip per statement
        url = parsed.set(drivername=f"sqlite+{sqlite_driver.DRIVER}").render_as_string(hide_password=False)
    # Sessions always end in a commit or a rollback (Database.session / Database.read): the pool's
    # own rollback when a connection comes back would be one more trip to the driver's thread.
    kwargs.setdefault("pool_reset_on_return", None)
    engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN instead of the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        # Switching to WAL (and even reading the mode while another process opens or
        # checkpoints the WAL) can report "locked" without waiting on the busy handler.
        if str(_retry_locked(cursor, "PRAGMA journal_mode")[0]).lower() != "wal":
            _retry_locked(cursor, "PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A read runs in autocommit: each SELECT is its own snapshot, as in PostgreSQL's default
        # READ COMMITTED (the code already holds to that), and it saves a BEGIN's trips.
        if not connection.get_execution_options().get(READ_ONLY_OPTION, False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _is_locked(exc: BaseException) -> bool:
    """The driver's OperationalError (sqlite3's, adapted by aiosqlite) for a locked database."""
    return "locked" in str(exc)


@retry(
    retry=retry_if_exception(_is_locked),
    wait=wait_exponential(multiplier=0.01, max=0.5),  # in the connection's own thread, while opening it
    stop=stop_after_delay(SQLITE_BUSY_TIMEOUT_S),
    reraise=True,
)
def _retry_locked(cursor: Any, sql: str) -> Any:
    """Run a PRAGMA, waiting out SQLITE_BUSY that bypasses the busy handler (bounded)."""
    cursor.execute(sql)
    return cursor.fetchone()


@dataclass(frozen=True)
class _Joined:
    """The session of a :meth:`Database.transaction` block, for the task that opened it only
    (tasks started inside the block copy the context, but must not write into its transaction)."""

    session: AsyncSession
    task: asyncio.Task[Any] | None


_JOINED: ContextVar[_Joined | None] = ContextVar("persona_studio_transaction", default=None)


def _joined_here() -> _Joined | None:
    """The :meth:`Database.transaction` block this task is in, if any."""
    joined = _JOINED.get()
    return joined if joined is not None and joined.task is asyncio.current_task() else None


class ReadOnlySession(RuntimeError):
    """A read session (:meth:`Database.read`) was asked to write."""


class _ReadOnlySyncSession(Session):
    """The session class of :meth:`Database.read`: a flush is refused. (A class, not a
    ``before_flush`` listener per session: registering one cost ~0.6 ms of every read.)"""

    def flush(self, objects: Any = None) -> None:
        if self.new or self.dirty or self.deleted:
            raise ReadOnlySession("a read session may not write; use Database.session()")
        super().flush(objects)


class Database:
    """An engine plus session factories; ``session()`` is one short write transaction, ``read()``
    one short read transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessions = async_sessionmaker(
            self.engine.execution_options(**{READ_ONLY_OPTION: True}),
            expire_on_commit=False,
            sync_session_class=_ReadOnlySyncSession,
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A transaction: committed when the block ends, rolled back on an exception. Inside a
        :meth:`transaction` block of the same task, the block's own session: it commits."""
        joined = _joined_here()
        if joined is not None:
            yield joined.session
            return
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """One transaction for every write :meth:`session` this task opens inside the block: all
        are committed together when it ends, or none (an exception rolls all back). One commit
        instead of several (a ``/post``: its thread, log line, job and turn). Reads
        (:meth:`read`) are not part of it and do not see its rows before the commit; a nested
        block is part of the outer one."""
        if _joined_here() is not None:
            yield
            return
        async with self.session() as session:
            token = _JOINED.set(_Joined(session, asyncio.current_task()))
            try:
                yield
            finally:
                _JOINED.reset(token)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only session (autocommit on SQLite): rolled back when the block ends;
        :class:`ReadOnlySession` if anything was added, changed or deleted in it."""
        async with self.read_sessions() as session:
            session.autoflush = False  # a stray change must reach the check below, not the database
            try:
                yield session
                if session.new or session.dirty or session.deleted:
                    raise ReadOnlySession("a read session may not write; use Database.session()")
            finally:
                session.expunge_all()  # detached as read (a rollback would expire them)
                await session.rollback()

    async def upgrade(self, revision: str = "head", home_workspaces: Mapping[str, str] | None = None) -> None:
        """Apply the Alembic migrations up to ``revision``. ``home_workspaces`` names the shared
        workspace of a platform where users' data moves when personas become a workspace's
        (migration 0007): ``{"wecom": corp id, "discord": the one guild id}``. One process at a
        time (see :meth:`_migrate`)."""
        await self._migrate(_upgrade_sync, revision, dict(home_workspaces or {}))

    async def downgrade(self, revision: str) -> None:
        """Undo the Alembic migrations above ``revision``."""
        await self._migrate(_downgrade_sync, revision)

    async def _migrate(self, step: Any, *args: Any) -> None:
        """Run a migration step in one transaction, one process at a time: on PostgreSQL under a
        transaction-scoped advisory lock, on a SQLite file under a file lock beside it (processes
        starting together wait for the first one and then find the head in place). On SQLite
        foreign keys are off meanwhile (as Alembic advises for batch mode: its copy-and-drop of a
        table would otherwise cascade deletes into, or fail on, the rows that point at it) and
        checked before the commit."""
        async with _sqlite_migration_lock(self.url), self.engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                await connection.run_sync(_pragma, "PRAGMA foreign_keys=OFF")
            try:
                async with connection.begin():
                    if connection.dialect.name == "postgresql":
                        lock = text("SELECT pg_advisory_xact_lock(:key)")
                        await connection.execute(lock, {"key": MIGRATION_LOCK_KEY})
                    await connection.run_sync(step, *args)
                    if sqlite and (broken := await connection.run_sync(_pragma, "PRAGMA foreign_key_check")):
                        raise RuntimeError(f"the migration left rows with dangling foreign keys: {broken[:5]}")
            finally:
                if sqlite:
                    await connection.run_sync(_pragma, "PRAGMA foreign_keys=ON")

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as connection:
            return await connection.run_sync(_current_sync)

    async def dispose(self) -> None:
        await self.engine.dispose()


@asynccontextmanager
async def _sqlite_migration_lock(url: str) -> AsyncIterator[None]:
    """An exclusive ``flock`` on ``<database file>.migrate.lock`` (nothing for other databases
    and in-memory SQLite); taken in a thread so the event loop keeps running while it waits."""
    database = make_url(url).database if is_sqlite(url) else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    import fcntl

    handle = await asyncio.to_thread(_open_lock_file, database)
    try:
        await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # closing the file releases the lock


def _open_lock_file(database: str) -> Any:
    path = Path(database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".migrate.lock").open("a")


def alembic_config(connection: Any = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade_sync(connection: Any, revision: str, home_workspaces: dict[str, str]) -> None:
    from alembic import command

    config = alembic_config(connection)
    config.attributes["home_workspaces"] = home_workspaces
    command.upgrade(config, revision)


def _pragma(connection: Any, sql: str) -> list[Any]:
    """A PRAGMA on the driver connection itself: outside any transaction SQLAlchemy would open."""
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _downgrade_sync(connection: Any, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(connection), revision)


def _current_sync(connection: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
