"""Processes the end-to-end bench scripts start and watch: ``persona-studio worker`` (the real CLI,
tiny engine on CPU), their shutdown, and the CPU time a process used (psutil)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def spawn_worker(
    root: Path, name: str, env: Mapping[str, str | None], log: Path | None = None
) -> subprocess.Popen[bytes]:
    """``persona-studio worker`` (tiny engine on CPU) in ``root/name`` with a BLOB_DIR and LORA_DIR
    of its own unless ``env`` names them; a ``None`` in ``env`` unsets that variable. Its log goes
    to ``log``, else to $BENCH_WORKER_LOG, else nowhere."""
    (root / name).mkdir()
    merged: dict[str, str | None] = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "ENGINE_MODEL": "tiny",
        "ENGINE_DEVICE": "cpu",
        "BLOB_DIR": str(root / name / "blobs"),
        "LORA_DIR": str(root / name / "loras"),
        "PYTHONPATH": str(ROOT),
        **env,
    }
    log_path = log or os.environ.get("BENCH_WORKER_LOG", os.devnull)
    with open(log_path, "a") as stderr:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker"],
            cwd=root / name,
            env={k: v for k, v in merged.items() if v is not None},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def stop(processes: Iterable[subprocess.Popen[bytes]], timeout_s: float = 20) -> None:
    """SIGTERM each (a worker hands its running job back and leaves), then wait; kill laggards."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (its threads included)."""
    import psutil  # with the engine extra (accelerate's dependency)

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def host_busy_seconds() -> float:
    """CPU seconds every process of this host has used since boot, all cores together."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
