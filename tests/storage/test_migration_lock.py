"""Issue 20 item 3: several workers starting at once on a fresh database all come up (migrations
run under a lock: a PostgreSQL advisory lock, a file lock beside a SQLite file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.storage.test_migrations import HEAD

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4


def _start_together(url: str) -> list[subprocess.CompletedProcess[str] | tuple[int, str, str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.storage.migrate_on_signal", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for _ in range(PROCESSES)
    ]
    for proc in procs:  # every process has loaded everything and waits for the go
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append((proc.returncode, out, err))
    return results


@pytest.mark.timeout(300)
def test_workers_starting_at_once_on_a_fresh_database_all_come_up(database_url: str) -> None:
    results = _start_together(database_url)
    failures = [err[-2000:] for code, _out, err in results if code != 0]
    assert failures == [], failures
    assert [out.strip() for _code, out, _err in results] == [HEAD] * PROCESSES
