"""Answers before the work that follows them.

A burst of commands (fifty users' ``/post`` at once) shares one event loop. Once a command is
answered it still has work to do — on Discord: open the post's thread, bind it, start its jobs —
and that work, run at once, takes the loop from the commands still waiting for their answer: the
last answers of a burst then come after most of the burst's follow-up work.

:class:`AnswersFirst` counts the commands that are before their answer. Follow-up work awaits
:meth:`AnswersFirst.after_answers`, which returns once none is (or after ``max_wait_s``, so that a
steady stream of commands cannot hold follow-up work back for long). Nothing is dropped or
reordered within a command: its own follow-up still runs after its own answer.
"""

from __future__ import annotations

import asyncio
import contextlib

#: follow-up work waits at most this long for the commands before their answer
MAX_WAIT_S = 2.0


class Answering:
    """One command before its answer; :meth:`answered` (idempotent) ends that."""

    def __init__(self, gate: AnswersFirst) -> None:
        self._gate = gate
        self._open = True

    def answered(self) -> None:
        if self._open:
            self._open = False
            self._gate._answered()


class AnswersFirst:
    def __init__(self, max_wait_s: float = MAX_WAIT_S) -> None:
        self.max_wait_s = max_wait_s
        self._before = 0
        self._held = 0
        self._none_before = asyncio.Event()
        self._none_before.set()

    @property
    def before_answer(self) -> int:
        """Commands that have not been answered yet."""
        return self._before

    @property
    def held(self) -> int:
        """Follow-up work waiting for those answers now."""
        return self._held

    def answering(self) -> Answering:
        """Count a command as before its answer until the returned token's ``answered()``."""
        self._before += 1
        self._none_before.clear()
        return Answering(self)

    def _answered(self) -> None:
        self._before -= 1
        if self._before == 0:
            self._none_before.set()

    async def after_answers(self) -> None:
        """Return once no command is before its answer, or after ``max_wait_s``."""
        if self._before == 0:
            return
        self._held += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._none_before.wait(), self.max_wait_s)
        finally:
            self._held -= 1
