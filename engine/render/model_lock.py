"""The engine lock: one job on the model at a time, first come first served, and a way for a long
job to let waiting jobs through between its steps.

A clip takes minutes and a still seconds; both run on one process's GPU. The long job calls
:meth:`ModelLock.yield_to_waiters` at each step boundary: when other jobs wait for the model, it
releases the lock, queues again behind them and continues once they are done. A waiting image
turn therefore starts within one denoising step of the clip, whatever the clip's length.

Reentrant like ``threading.RLock`` (the engine takes it again inside a job, e.g. to load), and
fair, unlike it: a thread that releases and asks again goes behind the threads already waiting.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType


class ModelLock:
    """A reentrant FIFO lock with :meth:`yield_to_waiters` (see the module doc)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._queue: deque[object] = deque()  # one ticket per waiting thread, in arrival order
        #: how often a holder let waiting jobs through (tests and metrics read it)
        self.yields = 0

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock (again, for its holder); ``blocking=False``: only if it is free and no one waits."""
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            if not blocking:
                if self._owner is not None or self._queue:
                    return False
                self._owner, self._depth = me, 1
                return True
            self._wait_turn(me, 1)
        return True

    def _wait_turn(self, me: int, depth: int) -> None:
        ticket = object()
        self._queue.append(ticket)
        while self._owner is not None or self._queue[0] is not ticket:
            self._cond.wait()
        self._queue.popleft()
        self._owner, self._depth = me, depth
        self._cond.notify_all()  # the next ticket re-checks (it waits for the owner to leave)

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a ModelLock this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """Threads waiting for the lock."""
        with self._cond:
            return len(self._queue)

    def held_by_me(self) -> bool:
        with self._cond:
            return self._owner == threading.get_ident()

    def yield_to_waiters(self) -> bool:
        """Between steps of a long job: if others wait, let all of them through first (they hold
        the lock in turn), then take it back at the same depth. Returns whether it yielded."""
        me = threading.get_ident()
        with self._cond:
            if self._owner != me:
                raise RuntimeError("yield_to_waiters by a thread that does not hold the ModelLock")
            if not self._queue:
                return False
            depth = self._depth
            self._owner, self._depth = None, 0
            self.yields += 1
            self._cond.notify_all()
            self._wait_turn(me, depth)
        return True

    def __enter__(self) -> ModelLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
