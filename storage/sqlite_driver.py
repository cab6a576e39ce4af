"""SQLite through aiosqlite with one trip to the connection's thread per statement.

aiosqlite runs each sqlite3 call in the connection's own thread: a call is a hand-off there and a
future back to the event loop. SQLAlchemy's aiosqlite adapter makes four of them for one SELECT
(open a cursor, execute, fetch the rows, close the cursor) and three for a write; on a busy front
end (fifty ``/post`` at once on two cores) these hand-offs were most of a command's cost. This
adapter runs the whole statement — cursor, execute, rows, close — as one function in that thread:
one trip. Everything else (the connection, transactions, errors, server-side cursors) is
SQLAlchemy's own aiosqlite dialect, registered here under ``sqlite+aiosqlite_onetrip``;
:func:`storage.db.make_engine` uses it for ``sqlite+aiosqlite`` URLs.

It relies on ``aiosqlite.Connection._execute`` (run a function in the connection's thread), the
call aiosqlite's own public methods are made of; aiosqlite is pinned in constraints.txt and
tests/storage/test_sqlite_driver.py checks the adapter against the plain one.
"""

from __future__ import annotations

import collections
import sqlite3
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)

DRIVER = "aiosqlite_onetrip"


@dataclass(frozen=True)
class _Finished:
    """What a statement left on its (closed) cursor."""

    description: Any
    rowcount: int
    lastrowid: int | None


def _run(conn: sqlite3.Connection, many: bool, operation: str, parameters: Any) -> tuple[_Finished, list[Any] | None]:
    """In the connection's thread: the statement, its rows (when it has any), its cursor closed."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else None
        return _Finished(cursor.description, cursor.rowcount, cursor.lastrowid), rows
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor whose statements are one trip each; nothing is opened until a statement runs."""

    __slots__ = ("_finished",)

    def __init__(self, adapt_connection: Any) -> None:
        self._finished: _Finished | None = None
        super().__init__(adapt_connection)

    def _make_new_cursor(self, connection: Any) -> Any:
        return None  # each statement opens and closes its own sqlite3 cursor, in the thread

    def _aenter_cursor(self, cursor: Any) -> Any:
        return None

    @property
    def description(self) -> Any:
        return self._finished.description if self._finished is not None else None

    @property
    def rowcount(self) -> int:
        return self._finished.rowcount if self._finished is not None else -1

    @property
    def lastrowid(self) -> Any:
        return self._finished.lastrowid if self._finished is not None else None

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    async def _async_soft_close(self) -> None:
        pass  # nothing is open: the rows are here already

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._trip(False, operation, parameters)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._trip(True, operation, seq_of_parameters)

    async def _trip(self, many: bool, operation: Any, parameters: Any) -> None:
        async with self._adapt_connection._execute_mutex:
            connection = self._connection
            self._finished, rows = await connection._execute(_run, connection._conn, many, operation, parameters)
            self._rows = collections.deque(rows or ())

    def nextset(self) -> None:
        return None  # sqlite3 has one result set per statement

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        adapted = super().connect(*arg, **kw)
        adapted.__class__ = OneTripConnection  # same slots: only the cursor class differs
        return adapted


class OneTripDialect(SQLiteDialect_aiosqlite):
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> AsyncAdapt_aiosqlite_dbapi:
        return OneTripDBAPI(__import__("aiosqlite"), __import__("sqlite3"))


registry.register(f"sqlite.{DRIVER}", __name__, "OneTripDialect")
