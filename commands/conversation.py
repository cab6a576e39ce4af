"""The platform-agnostic conversation: events in, actions out.

Front ends call :meth:`Conversation.handle` with an :class:`~commands.events.Event` and render
the actions it returns; job progress and results arrive later through the deliverer each front
end registers. All state (personas, threads, turns, jobs) lives in storage, so a restart of the
front end or the worker loses nothing.

Rules every front end inherits: only a thread's owner (and configured admins) may change it;
per-user job limits; input validation before anything is stored.
"""

from __future__ import annotations

import logging
import random
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from commands.delivery import RESULT_BUTTONS, DeliverFn, Delivery, image_out, turn_images
from commands.events import (
    Action,
    Attachment,
    Event,
    EventKind,
    FileOut,
    ImageOut,
    Images,
    OpenThread,
    Progress,
    Reply,
    Where,
)
from commands.export import build_export
from commands.params import SETTING_KEYS, effective_params, parse_settings, pick_seed
from commands.parser import PERSONA_ACTION_ALIASES, split_options
from commands.texts import HELP, render_tree
from commands.validation import InputError, check_image, check_text
from engine.progress import make_event
from engine.queue import JobQueue
from engine.specs import (
    TINY_ARCHETYPES,
    JobKind,
    JobSpec,
    PersonaSpec,
    RenderParams,
    default_params,
)
from storage.blobs import BlobStore
from storage.models import JobStatus, Persona, Thread, ThreadStatus, Turn, TurnStatus, User, utcnow
from storage.repository import DuplicateName, Store

log = logging.getLogger(__name__)

#: a post whose platform thread was not opened within this time is closed on the next start
STALE_HELD_S = 600
NAME_RE = re.compile(r"^[\w\-. ]{1,40}$")
PET_NAMES = ("Mia", "Luna", "Yuki", "Nova", "Aria", "Coco", "Lily", "Ruby", "Iris", "Jade", "Kiki", "Momo")


@dataclass(frozen=True)
class ConversationConfig:
    engine_model: str = "tiny"
    lora_dir: Path = Path("./data/loras")
    admin_ids: tuple[str, ...] = ()
    max_running_jobs: int = 2
    max_waiting_jobs: int = 8
    #: platforms whose posts live in platform threads: jobs start once the thread is bound
    threaded_platforms: frozenset[str] = frozenset({"discord"})


class Conversation:
    def __init__(self, store: Store, blobs: BlobStore, queue: JobQueue, config: ConversationConfig) -> None:
        self.store = store
        self.blobs = blobs
        self.queue = queue
        self.config = config
        self.delivery = Delivery(store, blobs, threaded=config.threaded_platforms)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.queue.start()
        self.delivery.start(self.queue.bus)
        # posts whose front end stopped between the post and opening its thread
        for thread_db_id in await self.store.held_threads(utcnow() - timedelta(seconds=STALE_HELD_S)):
            log.warning("post %s never got its platform thread; closing it", thread_db_id)
            await self.abandon_thread(thread_db_id)

    async def close(self) -> None:
        await self.delivery.close()
        await self.queue.close()

    def add_deliverer(self, platform: str, deliver: DeliverFn) -> None:
        self.delivery.add_deliverer(platform, deliver)

    async def deliver_pending(self, platform: str) -> int:
        return await self.delivery.deliver_pending(platform)

    # -- queries for front ends --------------------------------------------------------------
    async def archetypes(self) -> list[str]:
        root = self.config.lora_dir
        found = (
            sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.safetensors")))
            if root.is_dir()
            else []
        )
        if not found and self.config.engine_model == "tiny":
            return list(TINY_ARCHETYPES)  # written by the engine on first use
        return found

    async def persona_names(self, platform: str, user_id: str, prefix: str = "") -> list[str]:
        user = await self.store.user(platform, user_id)
        return [p.name for p in await self.store.list_personas(user.id) if p.name.lower().startswith(prefix.lower())]

    async def thread_owner(self, platform: str, thread_id: int) -> str | None:
        thread = await self.store.find_thread(platform, thread_id)
        if thread is None:
            return None
        return (await self.store.get_user(thread.owner_id)).platform_user_id

    async def can_act(self, platform: str, user_id: str, thread_id: int) -> bool:
        """May this user change the post in this platform thread (its owner, or an admin)?
        False for threads that are not posts. Front ends ask before forwarding a reaction."""
        thread = await self.store.find_thread(platform, thread_id)
        if thread is None:
            return False
        if self._is_admin_id(platform, user_id):
            return True
        return (await self.store.get_user(thread.owner_id)).platform_user_id == user_id

    async def bind_thread(self, thread_db_id: int, *, channel_id: int | None, thread_id: int | None) -> None:
        """The front end created the platform thread of a post: record it and start its jobs."""
        await self.store.bind_thread(thread_db_id, channel_id, thread_id)
        for job in await self.store.thread_jobs(thread_db_id):
            self.delivery.forget_route(job.id)
        for job in await self.store.release_held(thread_db_id):
            await self.queue.enqueue(JobSpec.model_validate(job.spec))

    async def abandon_thread(self, thread_db_id: int) -> None:
        """The front end could not open the platform thread of a post: cancel its waiting jobs
        (nothing to deliver, nothing counted against the user's limit) and close the post."""
        for job in await self.store.thread_jobs(thread_db_id):
            await self.queue.cancel(job.id)
            await self.store.finish_job(job.id, JobStatus.CANCELLED, error="the post's thread could not be opened")
            await self.store.confirm_delivery(job.id)
        await self.store.set_thread_status(thread_db_id, ThreadStatus.CANCELLED)

    # -- the entry point ---------------------------------------------------------------------
    async def handle(self, event: Event) -> list[Action]:
        user = await self.store.user(event.platform, event.user_id, event.user_name)
        ctx = _Ctx(event=event, user=user)
        try:
            if event.kind == EventKind.MESSAGE:
                return await self._message(ctx)
            command = (event.command or "").lower()
            if event.kind == EventKind.REACTION:
                return await self._result_action(ctx, command)
            handler = getattr(self, f"_cmd_{command}", None)
            if handler is None:
                return [ctx.error(f"Unknown command /{command}. Try /help.")]
            return await handler(ctx)
        except InputError as exc:
            return [ctx.error(str(exc))]

    # -- commands ----------------------------------------------------------------------------
    async def _cmd_help(self, ctx: _Ctx) -> list[Action]:
        return [ctx.reply(HELP)]

    async def _cmd_persona(self, ctx: _Ctx) -> list[Action]:
        opts = dict(ctx.event.options)
        words = ctx.event.args.split()
        action = str(opts.get("action") or (words[0] if words else "list")).lower()
        action = PERSONA_ACTION_ALIASES.get(action, action)
        rest = words[1:]
        if action == "create":
            archetype = str(opts.get("archetype") or (rest[0] if rest else "")).lower()
            name = str(opts.get("name") or " ".join(rest[1:])).strip()
            return await self._persona_create(ctx, archetype, name)
        if action == "list":
            personas = await self.store.list_personas(ctx.user.id)
            if not personas:
                return [ctx.reply("You have no personas yet. Create one: /persona create <archetype> [name]")]
            lines = [f"• {p.name} — {p.archetype} ({p.status})" for p in personas]
            return [ctx.reply("Your personas:\n" + "\n".join(lines))]
        name = str(opts.get("name") or " ".join(rest)).strip()
        if action in ("show", "delete"):
            persona = await self._own_persona(ctx, name)
            if action == "delete":
                await self.store.delete_persona(persona.id)
                return [ctx.reply(f"Persona {persona.name} deleted. Its posts stay in their threads.")]
            mix = "\n".join(f"  {lora} × {weight:.3f}" for lora, weight in persona.lora_mix) or "  (being drawn)"
            text = f"{persona.name} — {persona.archetype}, seed {persona.seed}, {persona.status}\nLoRA mix:\n{mix}"
            images = (
                (self._image(persona.reference_key, f"persona-{persona.name}.png"),) if persona.reference_key else ()
            )
            return [Images(where=ctx.where_user(), text=text, images=images)]
        raise InputError("usage: /persona create <archetype> [name] | list | show <name> | delete <name>")

    async def _persona_create(self, ctx: _Ctx, archetype: str, name: str) -> list[Action]:
        archetypes = await self.archetypes()
        if archetype not in archetypes:
            raise InputError(f"unknown archetype {archetype!r}; choose one of: {', '.join(archetypes)}")
        if not name:
            name = await self._free_name(ctx.user.id)
        if not NAME_RE.match(name):
            raise InputError("a persona name has 1-40 letters, digits, spaces, '-', '_' or '.'")
        await self._check_limits(ctx.user)
        seed = random.randrange(2**31)
        try:
            persona = await self.store.create_persona(ctx.user.id, name, archetype, [], seed)
        except DuplicateName as exc:
            raise InputError(str(exc)) from None
        spec = JobSpec(
            job_id=uuid.uuid4().hex,
            kind=JobKind.CREATE_PERSONA,
            user_id=ctx.user.id,
            persona=PersonaSpec(persona_id=persona.id, archetype=archetype, seed=seed),
            seed=seed,
            params=default_params(self.config.engine_model),
        )
        await self._submit(ctx, spec, thread=None)
        position = await self.queue.position(spec.job_id)
        return [
            ctx.reply(f"Creating persona {name} ({archetype})… I'll post the reference portrait when it's ready."),
            Progress(where=ctx.where_user(), job_id=spec.job_id, state="queued", position=position),
        ]

    async def _cmd_post(self, ctx: _Ctx) -> list[Action]:
        opts = dict(ctx.event.options)
        if "persona" in opts:
            persona_name = str(opts["persona"])
            count = opts.get("count", 1)
            prompt = str(opts.get("prompt") or "")
        else:
            persona_name, _, rest = ctx.event.args.strip().partition(" ")
            found, words = split_options(rest)
            count = found.get("count", found.get("n", 1))
            prompt = " ".join(words)
        if not persona_name:
            raise InputError("usage: /post <persona> [count=N] <prompt>")
        try:
            count = int(count)
        except (TypeError, ValueError):
            raise InputError("count must be a number from 1 to 4") from None
        if not 1 <= count <= 4:
            raise InputError("count must be from 1 to 4")
        prompt = check_text(prompt, "prompt")
        persona = await self._own_persona(ctx, persona_name)
        if persona.status != "ready":
            raise InputError(f"persona {persona.name} is still being created; try again in a moment")
        scene_key = self._store_attachments(ctx.event.attachments)
        if scene_key is None:
            scene_key = (ctx.user.settings or {}).get("pending_scene")
        await self._check_limits(ctx.user)
        params = self._params(ctx.user, None)
        seed = self._seed(ctx.user, None)
        # on platforms with threads the job waits (held) until the front end has opened the thread
        threaded = ctx.event.platform in self.config.threaded_platforms
        thread = await self.store.create_thread(
            platform=ctx.event.platform,
            owner_id=ctx.user.id,
            persona_id=persona.id,
            title=_title(persona.name, prompt),
            prompt=prompt,
            channel_id=ctx.event.channel_id,
            scene_key=scene_key,
        )
        if (ctx.user.settings or {}).get("pending_scene"):
            await self.store.update_user_settings(ctx.user.id, {"pending_scene": None})
        spec = JobSpec(
            job_id=uuid.uuid4().hex,
            kind=JobKind.GENERATE,
            user_id=ctx.user.id,
            thread_id=thread.id,
            persona=_persona_spec(persona),
            prompt=prompt,
            count=count,
            context_keys=[scene_key] if scene_key else [],
            seed=seed,
            params=params,
        )
        turn_params = {**params.model_dump(), "count": count, "context_keys": spec.context_keys}
        await self._submit(
            ctx,
            spec,
            thread=thread,
            turn=dict(parent_id=None, kind="generate", instruction=prompt, params=turn_params),
            start=not threaded,
        )
        if not threaded:
            await self.store.set_current_thread(ctx.user.id, thread.id)
        where = Where(
            platform=ctx.event.platform,
            user_id=ctx.event.user_id,
            thread_db_id=thread.id,
            channel_id=ctx.event.channel_id,
        )
        scene = " with your scene image" if scene_key else ""
        text = f"📸 Post #{thread.id} · {persona.name}: {prompt}\nRendering {count} image(s){scene}…"
        actions: list[Action] = [OpenThread(where=where, title=thread.title, text=text)]
        if not threaded:
            position = await self.queue.position(spec.job_id)
            actions.append(Progress(where=where, job_id=spec.job_id, state="queued", position=position))
        return actions

    async def _message(self, ctx: _Ctx) -> list[Action]:
        thread = await self._thread_of(ctx)
        if ctx.event.attachments and not ctx.event.text.strip():
            # an image alone: the scene image of the user's next post
            key = self._store_attachments(ctx.event.attachments)
            await self.store.update_user_settings(ctx.user.id, {"pending_scene": key})
            return [ctx.reply("Got the image: it will be the scene of your next /post.")]
        if thread is None:
            return [ctx.error("This is not a post thread. Start one with /post <persona> <prompt>, or /help.")]
        self._check_owner(ctx, thread)
        self._check_open(thread)
        text = check_text(ctx.event.text, "instruction")
        targets: list[int] | None = None
        if text.lower().startswith(("all:", "all：")):
            text = check_text(text[4:], "instruction")
            targets = []  # filled below: every image
        elif match := re.match(r"^#(\d)\s*[:：]?\s*(.+)$", text, re.S):
            targets = [int(match.group(1)) - 1]
            text = check_text(match.group(2), "instruction")
        current = await self._current_turn(thread)
        if current is None or current.status != TurnStatus.DONE or not current.image_keys:
            raise InputError("the first images of this post are not ready yet; wait for them, then send the edit")
        await self._check_idle(thread)
        count = len(current.image_keys)
        if targets == []:
            targets = list(range(count))
        targets = targets or [int((thread.settings or {}).get("target", 0))]
        if any(not 0 <= t < count for t in targets):
            raise InputError(f"this post has {count} image(s); use #1 to #{count}")
        return await self._start_edit(ctx, thread, current, text, targets, kind="edit", parent=current)

    async def _start_edit(
        self,
        ctx: _Ctx,
        thread: Thread,
        context: Turn,
        text: str,
        targets: list[int],
        *,
        kind: str,
        parent: Turn | None,
    ) -> list[Action]:
        await self._check_limits(ctx.user)
        persona = await self.store.get_persona(thread.persona_id)
        params = self._params(ctx.user, thread)
        spec = JobSpec(
            job_id=uuid.uuid4().hex,
            kind=JobKind.EDIT if kind == "edit" else JobKind.REGENERATE,
            of_kind=JobKind.EDIT if kind != "edit" else None,
            user_id=ctx.user.id,
            thread_id=thread.id,
            persona=_persona_spec(persona),
            prompt=text,
            context_keys=list(context.image_keys),
            targets=targets,
            seed=self._seed(ctx.user, thread),
            params=params,
        )
        turn_params = {**params.model_dump(), "targets": targets, "context_keys": spec.context_keys}
        await self._submit(
            ctx,
            spec,
            thread=thread,
            turn=dict(parent_id=parent.id if parent else None, kind=kind, instruction=text, params=turn_params),
        )
        where = ctx.where_thread(thread)
        position = await self.queue.position(spec.job_id)
        which = "every image" if len(targets) > 1 else f"image {targets[0] + 1}"
        return [
            ctx.reply(f"✏️ {text} ({which})", where=where),
            Progress(where=where, job_id=spec.job_id, state="queued", position=position),
        ]

    async def _result_action(self, ctx: _Ctx, command: str) -> list[Action]:
        if command not in ("approve", "regen", "undo", "cancel"):
            return [ctx.error(f"Unknown action {command!r}.")]
        return await getattr(self, f"_cmd_{command}")(ctx)

    async def _cmd_approve(self, ctx: _Ctx) -> list[Action]:
        thread, turn = await self._acted_turn(ctx)
        if turn.status != TurnStatus.DONE:
            raise InputError("that result is not finished; approve it when its images are there")
        await self.store.set_approved(turn.id, True)
        await self.store.set_thread_status(thread.id, ThreadStatus.APPROVED)
        return [
            ctx.reply(
                f"✅ Approved turn #{turn.id}. /export downloads the approved images.",
                where=ctx.where_thread(thread),
            )
        ]

    async def _cmd_regen(self, ctx: _Ctx) -> list[Action]:
        thread, turn = await self._acted_turn(ctx)
        if turn.status == TurnStatus.PENDING:
            raise InputError("that turn is still rendering; wait for it or ❌ cancel it")
        self._check_open(thread)
        await self._check_idle(thread)
        await self._check_limits(ctx.user)
        persona = await self.store.get_persona(thread.persona_id)
        params = self._params(ctx.user, thread)
        base_kind = turn.kind if turn.kind != "regenerate" else str(turn.params.get("of_kind", "edit"))
        of_kind = JobKind.GENERATE if base_kind == "generate" else JobKind.EDIT
        spec = JobSpec(
            job_id=uuid.uuid4().hex,
            kind=JobKind.REGENERATE,
            of_kind=of_kind,
            user_id=ctx.user.id,
            thread_id=thread.id,
            persona=_persona_spec(persona),
            prompt=turn.instruction,
            count=int(turn.params.get("count", len(turn.image_keys) or 1)),
            context_keys=list(turn.params.get("context_keys", [])),
            targets=list(turn.params.get("targets", [0])),
            seed=random.randrange(2**31),  # regenerate = same spec, a new seed
            params=params,
        )
        turn_params = {
            **params.model_dump(),
            "count": spec.count,
            "targets": spec.targets,
            "context_keys": spec.context_keys,
            "of_kind": base_kind,
            "replaces": turn.id,  # undo after a regenerate goes back to this result
        }
        await self._submit(
            ctx,
            spec,
            thread=thread,
            turn=dict(parent_id=turn.parent_id, kind="regenerate", instruction=turn.instruction, params=turn_params),
        )
        where = ctx.where_thread(thread)
        position = await self.queue.position(spec.job_id)
        return [
            ctx.reply(f"🔁 Again with a new seed: {turn.instruction}", where=where),
            Progress(where=where, job_id=spec.job_id, state="queued", position=position),
        ]

    async def _cmd_undo(self, ctx: _Ctx) -> list[Action]:
        """Back to the state before the acted-on result (the current one by default): its parent,
        or for a regenerate the result it replaced. The next edit branches from there."""
        thread, turn = await self._acted_turn(ctx)
        await self._check_idle(thread)
        back_to = turn.params.get("replaces") if turn.kind == "regenerate" else turn.parent_id
        if back_to is None:
            raise InputError("nothing to undo: this is the post's first result")
        previous = await self.store.get_turn(int(back_to))
        await self.store.set_current_turn(thread.id, previous.id)
        where = ctx.where_thread(thread)
        text = f"↩️ Back to turn #{previous.id} ({previous.instruction}). Your next edit starts from here."
        images = turn_images(self.blobs, previous)
        return [Images(where=where, turn_id=previous.id, text=text, images=images, buttons=RESULT_BUTTONS)]

    async def _cmd_cancel(self, ctx: _Ctx) -> list[Action]:
        thread = await self._owned_thread(ctx)
        jobs = await self.store.thread_jobs(thread.id)
        where = ctx.where_thread(thread)
        if jobs:
            for job in jobs:
                if not await self.queue.cancel(job.id):
                    # not in the queue (lost by a redis restart, or held): cancel it in storage
                    if await self.store.finish_job(job.id, JobStatus.CANCELLED, error="cancelled"):
                        await self.queue.bus.publish(make_event(job.id, "cancelled", error="cancelled"))
            return [ctx.reply(f"❌ Cancelling {len(jobs)} job(s)…", where=where)]
        await self.store.set_thread_status(thread.id, ThreadStatus.CANCELLED)
        return [ctx.reply("❌ Nothing is running; the post is closed. /post starts a new one.", where=where)]

    async def _cmd_history(self, ctx: _Ctx) -> list[Action]:
        thread = await self._owned_thread(ctx)  # the manifest-like detail (seeds) is the owner's
        turns = await self.store.turns(thread.id)
        text = f"Post #{thread.id}: {thread.prompt}\n" + render_tree(turns, thread.current_turn_id)
        return [ctx.reply(text, where=ctx.where_thread(thread))]

    async def _cmd_export(self, ctx: _Ctx) -> list[Action]:
        thread = await self._owned_thread(ctx)
        approved = await self.store.approved_turns(thread.id)
        if not approved:
            raise InputError("nothing approved yet: ✅ approve a result first, then /export")
        data = await self.export_zip(thread)
        return [
            FileOut(
                where=ctx.where_thread(thread),
                filename=f"post-{thread.id}.zip",
                data=data,
                text=f"📦 Post #{thread.id}: {len(approved)} approved turn(s) and manifest.json",
            )
        ]

    async def export_zip(self, thread: Thread) -> bytes:
        """Approved images plus manifest.json describing every turn of the thread."""
        return await build_export(self.store, self.blobs, thread)

    async def _cmd_status(self, ctx: _Ctx) -> list[Action]:
        jobs = await self.store.user_jobs(ctx.user.id)
        if not jobs:
            return [ctx.reply("No jobs running or waiting.", private=True)]
        lines = []
        for job in jobs:
            position = await self.queue.position(job.id)
            where = f"post #{job.thread_id}" if job.thread_id else "persona"
            state = f"waiting, {position} ahead" if position is not None else str(job.status)
            if job.status == JobStatus.RUNNING:
                state = f"running {job.progress:.0%}"
            lines.append(f"• {job.kind} ({where}): {state}")
        return [ctx.reply("Your jobs:\n" + "\n".join(lines), private=True)]

    async def _cmd_settings(self, ctx: _Ctx) -> list[Action]:
        """Per-thread settings inside a platform thread (Discord) or with ``post`` first on
        platforms without threads (``/settings post steps=8``); the user's defaults otherwise."""
        args = ctx.event.args.strip()
        post_scope = args.split(" ", 1)[0].lower() in ("post", "thread", "本帖")
        if post_scope:
            args = args.partition(" ")[2]
        thread = None
        if ctx.event.thread_id is not None or post_scope:
            thread = await self._require_thread(ctx)
            self._check_owner(ctx, thread)
        changes = {k: v for k, v in ctx.event.options.items() if k in SETTING_KEYS and v is not None}
        found, rest = split_options(args)
        if rest:
            raise InputError("usage: /settings [post] steps=N guidance=G size=WxH seed=S|random")
        changes.update(found)
        parsed = self._parse_settings(changes)
        if parsed:
            if thread is not None:
                await self.store.update_thread_settings(thread.id, parsed)
                thread = await self.store.get_thread(thread.id)
            else:
                ctx.user.settings = await self.store.update_user_settings(ctx.user.id, parsed)
        params = self._params(ctx.user, thread)
        scope = f"post #{thread.id}" if thread is not None else "your defaults"
        seed = (thread.settings if thread else ctx.user.settings or {}).get("seed")
        text = (
            f"Settings for {scope}: steps={params.steps} guidance={params.guidance:g} "
            f"size={params.width}x{params.height} seed={seed if seed is not None else 'random'}"
        )
        return [ctx.reply(text, private=True)]

    async def _cmd_threads(self, ctx: _Ctx) -> list[Action]:
        threads = await self.store.list_threads(ctx.user.id)
        if not threads:
            return [ctx.reply("No posts yet. /post <persona> <prompt> starts one.")]
        current = ctx.user.current_thread_id
        lines = [f"{'▶' if t.id == current else ' '} #{t.id} {t.title} [{t.status}]" for t in threads]
        return [ctx.reply("Your posts (/thread <id> switches):\n" + "\n".join(lines))]

    async def _cmd_thread(self, ctx: _Ctx) -> list[Action]:
        raw = str(ctx.event.options.get("id") or ctx.event.args).strip().lstrip("#")
        if not raw.isdigit():
            raise InputError("usage: /thread <post number>")
        try:
            thread = await self.store.get_thread(int(raw))
        except LookupError:
            raise InputError(f"there is no post #{raw}") from None
        self._check_owner(ctx, thread)
        await self.store.set_current_thread(ctx.user.id, thread.id)
        return [ctx.reply(f"Now in post #{thread.id}: {thread.title}", where=ctx.where_thread(thread))]

    # -- helpers -----------------------------------------------------------------------------
    async def _submit(
        self,
        ctx: _Ctx,
        spec: JobSpec,
        *,
        thread: Thread | None,
        turn: dict[str, Any] | None = None,
        start: bool = True,
    ) -> None:
        """Store the job and its turn (one transaction) first, then queue it: a crash loses nothing.
        With ``start=False`` the job is held until its platform thread exists (bind_thread)."""
        await self.store.create_job(
            spec.job_id,
            str(spec.kind),
            spec.model_dump(mode="json"),
            user_id=ctx.user.id,
            thread_id=thread.id if thread else None,
            platform=ctx.event.platform,
            channel_id=ctx.event.channel_id,
            status=JobStatus.QUEUED if start else JobStatus.HELD,
            turn={"thread_id": thread.id, "seed": spec.seed, **turn} if turn is not None and thread else None,
        )
        if start:
            await self.queue.enqueue(spec)

    async def _check_limits(self, user: User) -> None:
        jobs = await self.store.user_jobs(user.id)
        limit = self.config.max_running_jobs + self.config.max_waiting_jobs
        if len(jobs) >= limit:
            raise InputError(
                f"you have {len(jobs)} jobs running or waiting (limit: {self.config.max_running_jobs} running "
                f"+ {self.config.max_waiting_jobs} waiting). Wait for one to finish or ❌ cancel one."
            )

    async def _check_idle(self, thread: Thread) -> None:
        if await self.store.thread_jobs(thread.id):
            raise InputError("this post is still rendering; wait for the result (or ❌ cancel) before the next edit")

    @staticmethod
    def _check_open(thread: Thread) -> None:
        if thread.status == ThreadStatus.CANCELLED:
            raise InputError("this post is closed; start a new one with /post")

    def _check_owner(self, ctx: _Ctx, thread: Thread) -> None:
        if thread.owner_id == ctx.user.id or self._is_admin(ctx.event):
            return
        raise InputError("only the owner of this post can change it. Start your own with /post.")

    def _is_admin(self, event: Event) -> bool:
        return self._is_admin_id(event.platform, event.user_id)

    def _is_admin_id(self, platform: str, user_id: str) -> bool:
        admins = self.config.admin_ids
        return user_id in admins or f"{platform}:{user_id}" in admins

    async def _thread_of(self, ctx: _Ctx) -> Thread | None:
        """The post the event is about: the result it acts on, its platform thread, or the
        user's current post."""
        if ctx.event.turn_id is not None:
            try:
                turn = await self.store.get_turn(ctx.event.turn_id)
            except LookupError:
                raise InputError("that result no longer exists") from None
            return await self.store.get_thread(turn.thread_id)
        if ctx.event.thread_id is not None:
            return await self.store.find_thread(ctx.event.platform, ctx.event.thread_id)
        if ctx.event.platform in self.config.threaded_platforms:
            return None
        if ctx.user.current_thread_id is None:
            return None
        return await self.store.get_thread(ctx.user.current_thread_id)

    async def _require_thread(self, ctx: _Ctx) -> Thread:
        thread = await self._thread_of(ctx)
        if thread is None:
            raise InputError("use this inside a post (open one with /post <persona> <prompt>)")
        return thread

    async def _owned_thread(self, ctx: _Ctx) -> Thread:
        thread = await self._require_thread(ctx)
        self._check_owner(ctx, thread)
        return thread

    async def _acted_turn(self, ctx: _Ctx) -> tuple[Thread, Turn]:
        """The turn a reaction/button/command acts on: the one it names, else the current turn."""
        if ctx.event.turn_id is not None:
            try:
                turn = await self.store.get_turn(ctx.event.turn_id)
            except LookupError:
                raise InputError("that result no longer exists") from None
            thread = await self.store.get_thread(turn.thread_id)
            if ctx.event.thread_id is not None and thread.thread_id not in (None, ctx.event.thread_id):
                raise InputError("that result belongs to another post")
            self._check_owner(ctx, thread)
            return thread, turn
        thread = await self._owned_thread(ctx)
        turn = await self._current_turn(thread)
        if turn is None:
            raise InputError("this post has no result yet")
        return thread, turn

    async def _current_turn(self, thread: Thread) -> Turn | None:
        if thread.current_turn_id is not None:
            return await self.store.get_turn(thread.current_turn_id)
        turns = await self.store.turns(thread.id)
        return turns[0] if turns else None

    async def _own_persona(self, ctx: _Ctx, name: str) -> Persona:
        if not name:
            raise InputError("name the persona (see /persona list)")
        persona = await self.store.find_persona(ctx.user.id, name)
        if persona is None:
            names = ", ".join(p.name for p in await self.store.list_personas(ctx.user.id)) or "none yet"
            raise InputError(f"you have no persona named {name!r} (yours: {names})")
        return persona

    async def _free_name(self, owner_id: int) -> str:
        taken = {p.name.lower() for p in await self.store.list_personas(owner_id)}
        for name in PET_NAMES:
            if name.lower() not in taken:
                return name
        return f"Persona-{len(taken) + 1}"

    def _store_attachments(self, attachments: Sequence[Attachment]) -> str | None:
        if not attachments:
            return None
        if len(attachments) > 1:
            raise InputError("attach one scene image at most")
        attachment = attachments[0]
        check_image(attachment.data, attachment.filename)
        return self.blobs.put(attachment.data)

    def _params(self, user: User, thread: Thread | None) -> RenderParams:
        return effective_params(self.config.engine_model, user.settings, thread.settings if thread else None)

    @staticmethod
    def _seed(user: User, thread: Thread | None) -> int:
        return pick_seed(user.settings, thread.settings if thread else None)

    def _parse_settings(self, raw: dict[str, Any]) -> dict[str, Any]:
        return parse_settings(raw, self.config.engine_model)

    def _image(self, key: str, filename: str, caption: str = "") -> ImageOut:
        return image_out(self.blobs, key, filename, caption)


@dataclass
class _Ctx:
    event: Event
    user: User

    def where_user(self) -> Where:
        return Where(
            platform=self.event.platform,
            user_id=self.event.user_id,
            channel_id=self.event.channel_id,
            thread_id=self.event.thread_id,
        )

    def where_thread(self, thread: Thread) -> Where:
        return Where(
            platform=self.event.platform,
            user_id=self.event.user_id,
            thread_db_id=thread.id,
            channel_id=thread.channel_id,
            thread_id=thread.thread_id,
        )

    def reply(self, text: str, *, where: Where | None = None, private: bool = False) -> Reply:
        return Reply(where=where or self.where_user(), text=text, private=private)

    def error(self, text: str) -> Reply:
        message = text[0].upper() + text[1:] if text else text
        return Reply(where=self.where_user(), text=f"⚠️ {message}", private=True)


def _persona_spec(persona: Persona) -> PersonaSpec:
    return PersonaSpec(
        persona_id=persona.id,
        archetype=persona.archetype,
        lora_mix=[(str(n), float(w)) for n, w in persona.lora_mix],
        seed=persona.seed,
        reference_key=persona.reference_key,
        embedding=persona.face_embedding,
    )


def _title(persona: str, prompt: str) -> str:
    title = f"{persona}: {prompt}"
    return title if len(title) <= 90 else title[:89] + "…"


def _at(values: Sequence[Any], index: int) -> Any:
    return values[index] if index < len(values) else None


__all__ = ["Conversation", "ConversationConfig"]
