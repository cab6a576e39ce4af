"""The persona-studio command line, run as a user would: a subprocess on a fresh folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.services import free_port
from tests.storage.test_migrations import HEAD
from tests.wecom.harness import AES_KEY, AGENT_ID, CORP_ID, SECRET, TOKEN, WeComSender

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "bot.cli"]


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120)


def test_help_lists_the_subcommands() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for name in ("config", "db", "demo", "chat", "run", "web", "worker"):
        assert name in result.stdout


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    result = cli(
        "config", "show", env={"DISCORD_TOKEN": "abc.def.secret-token-99", "WECOM_SECRET": SECRET}, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "secret-token" not in result.stdout and SECRET not in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("DISCORD_TOKEN"))
    assert line.split()[-1] == "****99"
    assert "ENGINE_MODEL" in result.stdout and "tiny" in result.stdout


def test_a_bad_setting_stops_with_one_line(tmp_path: Path) -> None:
    result = cli("config", "show", env={"WECOM_PORT": "http"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("persona-studio: setting WECOM_PORT:")


def test_db_upgrade_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'db.sqlite'}"
    result = cli("db", "upgrade", env={"DATABASE_URL": url}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"revision {HEAD}" in result.stdout
    assert (tmp_path / "fresh" / "db.sqlite").exists()


@pytest.mark.postgres
async def test_db_upgrade_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    result = cli("db", "upgrade", env={"DATABASE_URL": postgres_url}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"revision {HEAD}" in result.stdout


def test_run_without_front_ends_and_worker_without_redis_explain_themselves(tmp_path: Path) -> None:
    run = cli("run", cwd=tmp_path)
    assert run.returncode == 2 and "DISCORD_TOKEN" in run.stdout and "WECOM_CORP_ID" in run.stdout
    half = cli("run", env={"WECOM_CORP_ID": CORP_ID}, cwd=tmp_path)
    assert half.returncode == 2 and "setting WECOM_AGENT_ID" in half.stdout
    worker = cli("worker", cwd=tmp_path)
    assert worker.returncode == 2 and "REDIS_URL" in worker.stdout


def test_front_ends_import_no_model_libraries() -> None:
    code = (
        "import sys, bot.cli, bot.app, bot.console, bot.wecom, bot.discord, bot.serve, commands.conversation\n"
        "heavy = ('torch', 'diffusers', 'transformers', 'peft', 'insightface', 'dlib')\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_run_serves_the_wecom_callback(tmp_path: Path) -> None:
    port, web_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WECOM_CORP_ID": CORP_ID,
        "WECOM_AGENT_ID": str(AGENT_ID),
        "WECOM_SECRET": SECRET,
        "WECOM_TOKEN": TOKEN,
        "WECOM_AES_KEY": AES_KEY,
        "WECOM_HOST": "127.0.0.1",
        "WECOM_PORT": str(port),
        "WECOM_API_BASE": "http://127.0.0.1:9",  # never reached by URL verification
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'run.db'}",
        "WEB_PORT": str(web_port),
    }
    process = subprocess.Popen(
        [*CLI, "run"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # wait until the server listens (or the process dies)
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the callback server did not start"
                time.sleep(0.1)
        query = urllib.parse.urlencode(WeComSender().echo("hello-1234"))  # wechatpy encrypts, as WeCom does
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/wecom/callback?{query}", timeout=10) as response:
            assert response.status == 200
            assert response.read() == b"hello-1234"
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=10) as response:
            assert response.status == 200  # the web studio started beside the chat front end
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_worker_health_check_fails_without_a_worker(redis_url: str, tmp_path: Path) -> None:
    result = cli("worker", "--check", env={"REDIS_URL": redis_url}, cwd=tmp_path)
    assert result.returncode == 1
    assert "no worker has reported" in result.stdout


# -- how `run` starts front ends: bot.frontend.serve and each front end's task group ----------


class _FakeFrontEnd:
    def __init__(self, platform: str, fail_after: float | None = None) -> None:
        from bot.frontend import FrontEndTasks

        self.platform = platform
        self.tasks = FrontEndTasks(platform)
        self.fail_after = fail_after
        self.log: list[str] = []

    async def start(self) -> None:
        await self.tasks.open()
        self.log.append("start")

    async def wait_closed(self) -> None:
        import asyncio

        if self.fail_after is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.fail_after)
        raise RuntimeError(f"{self.platform} lost its connection")

    async def stop(self) -> None:
        await self.tasks.close(0.5)
        self.log.append("stop")

    async def deliver(self, actions: object) -> None:
        return None

    async def deliver_pending(self) -> int:
        return 0


async def test_serve_stops_every_front_end_when_one_fails_and_reraises() -> None:
    from bot.frontend import serve

    steady, failing = _FakeFrontEnd("steady"), _FakeFrontEnd("failing", fail_after=0.05)
    with pytest.raises(RuntimeError, match="failing lost its connection"):
        await serve(steady, failing)
    assert steady.log == ["start", "stop"] and failing.log == ["start", "stop"]


async def test_serve_freezes_what_start_up_built_out_of_the_collectors_sight() -> None:
    import gc

    from bot.frontend import serve

    gc.unfreeze()  # nothing frozen by an earlier test
    frozen_while_starting: list[int] = []
    front_end = _FakeFrontEnd("steady", fail_after=0.01)
    start = front_end.start

    async def starting() -> None:
        frozen_while_starting.append(gc.get_freeze_count())
        await start()

    front_end.start = starting  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError):
            await serve(front_end)
        assert frozen_while_starting == [0]
        assert gc.get_freeze_count() > 0  # once started: a full collection no longer scans these
    finally:
        gc.unfreeze()


async def test_front_end_tasks_log_failures_drain_and_cancel_on_close() -> None:
    import asyncio

    from bot.frontend import FrontEndTasks

    tasks = FrontEndTasks("test")
    await tasks.open()
    done: list[str] = []

    async def quick() -> None:
        await asyncio.sleep(0.01)
        tasks.spawn(later())  # spawned by a task: drain waits for it too
        raise ValueError("logged, not propagated")

    async def later() -> None:
        await asyncio.sleep(0.02)
        done.append("later")

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            done.append("cancelled")

    tasks.spawn(quick())
    await tasks.drain()
    assert done == ["later"]
    tasks.spawn(forever())
    await tasks.close(timeout_s=0.05)
    assert done == ["later", "cancelled"] and not tasks.is_open
    with pytest.raises(RuntimeError):
        tasks.spawn(later())


def test_split_text_measures_with_size_and_never_splits_a_character() -> None:
    from bot.frontend import split_text, utf8_size

    text = "第一行\n" + "é" * 10
    pieces = split_text(text, 12, utf8_size)
    assert "".join(pieces) == text and all(utf8_size(p) <= 12 for p in pieces)
    assert pieces == ["第一行\n", "é" * 6, "é" * 4]  # cut after the newline: still at least half full
    assert split_text("abcdef", 4) == ["abcd", "ef"] and split_text("", 4) == [""]


async def test_persona_export_loads_in_plain_diffusers_and_eval_identity_reports(tmp_path: Path) -> None:
    """Train a persona through the console (tiny engine), then export and evaluate it from the CLI."""
    import io
    import json

    import torch

    from bot.app import build_app
    from bot.console import ConsoleFrontEnd
    from engine.render.tiny_kontext import build_tiny_pipeline
    from storage.settings import load_settings

    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        "BLOB_DIR": str(tmp_path / "blobs"),
        "LORA_DIR": str(tmp_path / "loras"),
        "ENGINE_MODEL": "tiny",
        "ENGINE_DEVICE": "cpu",
    }
    settings = load_settings(
        database_url=env["DATABASE_URL"], blob_dir=tmp_path / "blobs", lora_dir=tmp_path / "loras", redis_url=None
    )
    app = await build_app(settings)
    try:
        console = ConsoleFrontEnd(app.conversation, tmp_path / "out", user="ann", stream=io.StringIO(), live=False)
        for line in ("/persona create sweet Mia", "/persona train Mia images=2 steps=3"):
            for action in await console.send(line):
                if getattr(action, "state", "") == "queued":
                    await console.wait_job(action.job_id, limit_s=120)
    finally:
        await app.close()

    out = tmp_path / "export"
    result = cli("persona", "export", "Mia", "--user", "console:ann", "--out", str(out), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "persona.json").read_text())
    assert manifest["version_in_use"] == "v1" and len(manifest["versions"]) == 1
    assert manifest["versions"][0]["report"]["steps"] == 3
    assert (out / "portrait.png").is_file()
    kept = sorted((out / "training").glob("*.png"))
    assert kept and all(p.with_suffix(".txt").read_text().startswith(manifest["trigger"]) for p in kept)

    pipe = build_tiny_pipeline()  # plain diffusers: load_lora_weights on the exported file
    before = {n: p.detach().clone() for n, p in pipe.transformer.named_parameters()}
    pipe.load_lora_weights(str(out / "lora.safetensors"), adapter_name="mia")
    assert pipe.transformer.peft_config["mia"].r == 16
    assert pipe.transformer.peft_config["mia"].lora_alpha == manifest["versions"][0]["report"]["alpha"]
    assert any("lora_B" in n for n, _ in pipe.transformer.named_parameters())
    assert all(torch.equal(before[n], p) for n, p in pipe.transformer.named_parameters() if n in before)

    # bad input: a clear line, exit 2, nothing written
    missing = cli("persona", "export", "Nobody", "--user", "console:ann", "--out", str(tmp_path / "x"), env=env)
    assert missing.returncode == 2 and "no persona named 'Nobody'" in missing.stderr
    assert not (tmp_path / "x").exists()
    bad_user = cli("persona", "export", "Mia", "--user", "ann", "--out", str(tmp_path / "x"), env=env)
    assert bad_user.returncode == 2 and "PLATFORM:ID" in bad_user.stderr

    evaluated = cli("eval", "identity", "Mia", "--user", "console:ann", "--renders", "2", env=env, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["version"] == "v1" and report["checked"] is False  # tiny: the reference shows no face
    wrong = cli("eval", "identity", "Mia", "--user", "console:ann", "--version", "v9", env=env, cwd=tmp_path)
    assert wrong.returncode == 2 and "no version 'v9'" in wrong.stderr


def test_persona_export_refuses_a_file_an_unwritable_path_and_a_non_empty_folder(tmp_path: Path) -> None:
    """Issue 20 item 11: --out onto a file, under a file, onto a folder holding files (the live
    blob folder above all) is refused with one clear line and exit 2; --force merges into a folder."""
    blobs = tmp_path / "blobs"
    (blobs / "ab").mkdir(parents=True)
    (blobs / "ab" / "keep.png").write_bytes(b"x")
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        "BLOB_DIR": str(blobs),
        "LORA_DIR": str(tmp_path / "loras"),
    }
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    full = tmp_path / "full"
    full.mkdir()
    (full / "other.txt").write_text("theirs")
    cases = {
        str(a_file): "is a file",
        str(a_file / "sub"): "cannot be written",
        str(full): "is not empty",
        str(blobs): "inside the blob folder",
        str(blobs / "ab"): "inside the blob folder",
    }
    for out, expected in cases.items():
        result = cli("persona", "export", "Mia", "--out", out, env=env, cwd=tmp_path)
        assert result.returncode == 2 and expected in result.stderr, (out, result.stderr)
        assert "Traceback" not in result.stderr
    assert a_file.read_text() == "mine" and sorted(p.name for p in full.iterdir()) == ["other.txt"]
    merged = cli("persona", "export", "Mia", "--out", str(full), "--force", env=env, cwd=tmp_path)
    assert merged.returncode == 2 and "no persona named 'Mia'" in merged.stderr  # past the folder check
