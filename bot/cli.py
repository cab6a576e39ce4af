"""The ``persona-studio`` command line.

Subcommands import what they need when they run, so ``--help`` and ``config show`` start fast
and never load torch.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from storage.blobs import BlobStoreUnavailable
from storage.settings import Settings, SettingsError, hide_password, load_settings
from storage.workspace_keys import configured_homes

log = logging.getLogger("persona_studio")


def _config_show(settings: Settings, _args: argparse.Namespace) -> int:
    shown = settings.masked()
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        print(f"{name:<{width}}  {value}")
    return 0


def _db_upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    from storage.db import Database

    async def upgrade() -> str | None:
        db = Database(settings.database_url)
        try:
            await db.upgrade(home_workspaces=configured_homes(settings.wecom_corp_id, settings.discord_guild_ids))
            return await db.current_revision()
        finally:
            await db.dispose()

    revision = asyncio.run(upgrade())
    print(f"database at revision {revision}: {hide_password(settings.database_url)}")
    return 0


def _loras_tiny(settings: Settings, args: argparse.Namespace) -> int:
    from engine.render.loras import write_tiny_library

    root = Path(args.dir) if args.dir else settings.lora_dir
    written = write_tiny_library(root)
    print(f"wrote {len(written)} tiny LoRA files under {root}")
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from bot.demo import run_demo

    return asyncio.run(run_demo(settings, Path(args.out), args.model))


def _chat(settings: Settings, args: argparse.Namespace) -> int:
    from bot.console import run_chat

    return asyncio.run(run_chat(settings, user=args.user))


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    from bot.serve import run_front_ends

    return asyncio.run(run_front_ends(settings))


def _web(settings: Settings, _args: argparse.Namespace) -> int:
    from bot.serve import run_web

    return asyncio.run(run_web(settings))


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    if args.check:
        from engine.jobs.worker_health import check_health

        return check_health(settings)
    from engine.jobs.worker import run_worker

    return run_worker(settings, burst=args.burst)


def _persona_export(settings: Settings, args: argparse.Namespace) -> int:
    from bot.persona_tools import ToolError, run_export

    try:
        written = asyncio.run(run_export(settings, args.name, args.user, Path(args.out), force=args.force))
    except ToolError as exc:
        print(f"persona-studio: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.name} to {args.out} ({len(written)} files)")
    return 0


def _eval_identity(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from bot.persona_tools import ToolError, run_eval

    if args.renders < 1:
        print("persona-studio: --renders must be at least 1", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(run_eval(settings, args.name, args.user, args.renders, args.version))
    except ToolError as exc:
        print(f"persona-studio: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def configure_logging(*, verbose: bool = False) -> None:
    """Our own INFO logs; the libraries' chatter (alembic, transformers, diffusers) only when -v."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persona-studio",
        description="Run a consistent virtual influencer from Discord, WeCom or a console.",
        epilog="Settings come from the environment and .env; see .env.example.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Callable[[Settings, argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help, description=help)
        command.set_defaults(handler=handler)
        return command

    config = sub.add_parser("config", help="show the effective settings")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    config_sub.add_parser("show", help="print every setting, secrets masked").set_defaults(handler=_config_show)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_sub.add_parser("upgrade", help="apply migrations up to the newest").set_defaults(handler=_db_upgrade)

    loras = sub.add_parser("loras", help="the LoRA library")
    loras_sub = loras.add_subparsers(dest="loras_command", metavar="ACTION", required=True)
    tiny = loras_sub.add_parser("make-tiny", help="write a random LoRA library for the tiny model")
    tiny.add_argument("--dir", help="target folder (default LORA_DIR)")
    tiny.set_defaults(handler=_loras_tiny)

    demo = add("demo", _demo, "run the whole loop offline: persona, post, edits, undo, regen, approve, export")
    demo.add_argument("--out", default="demo-out", help="folder for images, contact sheet, export (default demo-out)")
    demo.add_argument(
        "--model",
        default="tiny",
        help="the tiny model of an engine family: tiny (FLUX.1 Kontext, default) or tiny-klein (FLUX.2 [klein])",
    )
    chat = add("chat", _chat, "interactive console front end")
    chat.add_argument("--user", default="console", help="your user name in the console (default console)")
    add(
        "run",
        _run,
        "start the front ends (Discord, WeCom, the web studio) with an embedded worker if REDIS_URL is unset",
    )
    add("web", _web, "start the web studio alone: /gallery pages, /healthz, /readyz, /metrics")
    persona = sub.add_parser("persona", help="personas: export")
    persona_sub = persona.add_subparsers(dest="persona_command", metavar="ACTION", required=True)
    export = persona_sub.add_parser(
        "export", help="write portrait.png, lora.safetensors, persona.json and training/ to a folder"
    )
    export.add_argument("name", help="the persona's name")
    export.add_argument("--user", default="console:console", help="owner as PLATFORM:ID (default console:console)")
    export.add_argument("--out", required=True, help="target folder (new or empty)")
    export.add_argument("--force", action="store_true", help="merge into a folder that holds files already")
    export.set_defaults(handler=_persona_export)

    evals = sub.add_parser("eval", help="measurements")
    evals_sub = evals.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    identity = evals_sub.add_parser("identity", help="identity scores of N renders of a persona vs its reference")
    identity.add_argument("name", help="the persona's name")
    identity.add_argument("--user", default="console:console", help="owner as PLATFORM:ID (default console:console)")
    identity.add_argument("--renders", type=int, default=16, help="how many renders (default 16)")
    identity.add_argument("--version", help="v<N> or blend (default: the version in use)")
    identity.set_defaults(handler=_eval_identity)

    worker = add("worker", _worker, "start an arq GPU worker (needs REDIS_URL)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.add_argument("--check", action="store_true", help="health check: exit 0 if a worker reported recently")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"persona-studio: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.handler(settings, args) or 0)
    except KeyboardInterrupt:
        return 130
    except BlobStoreUnavailable as exc:  # checked at start: say what, not a traceback
        print(f"persona-studio: blob store unavailable: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run as a script (``python bot/cli.py``), Python puts bot/ first on sys.path, where the
    # package bot/discord would shadow discord.py: take it off (``python -m bot.cli`` is fine).
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.exit(main())
