"""The platform-agnostic conversation: events in, actions out.

Front ends call :meth:`Conversation.handle` with an :class:`~commands.events.Event` and render
the actions it returns; job progress and results arrive later through the deliverer each front
end registers. All state (personas, threads, turns, jobs) lives in storage, so a restart of the
front end or the worker loses nothing.

What each command does is in ``commands/handlers/`` (personas, posts and turns, information),
which commands exist in ``commands/table.py`` (their arguments bound by ``commands/args.py``),
and the rules every front end inherits (owner, limits, open and idle posts) in
``commands/rules.py``. Handlers see this class through the narrow protocols of
``commands/ports.py``. This class keeps the entry point, the lookups front ends need, and job
submission.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from commands import workspaces
from commands.args import bind, resolve, usage
from commands.config import ConversationConfig
from commands.context import Ctx
from commands.delivery import DeliverFn, Delivery
from commands.events import Action, Event, EventKind, ImageOut, Progress, Reply, Where
from commands.export import build_export
from commands.handlers import posts
from commands.job_cancel import cancel_job
from commands.outputs import image_out
from commands.params import effective_params, pick_seed
from commands.persona_spec import persona_spec
from commands.table import find, help_text
from commands.validation import InputError
from commands.web_links import job_page, studio_link
from engine import metrics
from engine.jobs.outcomes import finish_job
from engine.jobs.queue import JobQueue
from engine.specs import (
    TINY_ARCHETYPES,
    TINY_MODELS,
    JobKind,
    JobSpec,
    PersonaSpec,
    RenderParams,
    family_facts,
)
from storage.blobs import BlobStore
from storage.models import Job, JobStatus, Persona, Thread, ThreadStatus, User, WorkspaceRole, utcnow
from storage.repository import Store
from storage.workspace_keys import PERSONAL_PREFIX, home_key

log = logging.getLogger(__name__)

TEXT_UNEXPECTED = "⚠️ Something went wrong on our side; nothing was changed by it. Please try again."
#: a post whose platform thread was not opened within this time is closed on the next start
STALE_HELD_S = 600


class Conversation:
    def __init__(self, store: Store, blobs: BlobStore, queue: JobQueue, config: ConversationConfig) -> None:
        self.store = store
        self.blobs = blobs
        self.queue = queue
        self.config = config
        self.delivery = Delivery(store, blobs, threaded=config.threaded_platforms)
        self.delivery.finished_hooks.append(self._job_finished)
        if config.web_secret and config.web_public_url:  # running jobs link to their live page
            self.delivery.live_link = lambda user_id, job_id: studio_link(
                config.web_secret, config.web_public_url, user_id, job_page(job_id)
            )

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.queue.start()
        self.delivery.start(self.queue.bus)
        # posts whose front end stopped between the post and opening its thread
        for thread_db_id in await self.store.held_threads(utcnow() - timedelta(seconds=STALE_HELD_S)):
            thread = await self.store.get_thread(thread_db_id)
            if thread.platform in self.config.threaded_platforms and thread.thread_id is None:
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
        """Archetype folders of the engine family's LoRA library (engine.specs.FamilyFacts.lora_root)."""
        model = self.config.engine_model
        root = family_facts(model).lora_root(self.config.lora_dir, model)
        found = (
            sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.safetensors")))
            if root.is_dir()
            else []
        )
        if not found and model in TINY_MODELS:
            return list(TINY_ARCHETYPES)  # written by the engine on first use
        return found

    async def _home(self, platform: str, user_id: str, workspace: str) -> int:
        """The id of the workspace named by a front end ("" = the platform's default) for lookups."""
        key = workspace or home_key(platform, user_id).external_id
        return (await self.store.workspace(platform, key, personal=key.startswith(PERSONAL_PREFIX))).id

    async def persona_names(self, platform: str, user_id: str, prefix: str = "", workspace: str = "") -> list[str]:
        """Autocomplete: the persona names of the workspace (nothing of another)."""
        found = await self.store.list_personas_in(await self._home(platform, user_id, workspace))
        return [p.name for p in found if p.name.lower().startswith(prefix.lower())]

    async def product_names(self, platform: str, user_id: str, prefix: str = "", workspace: str = "") -> list[str]:
        found = await self.store.list_products_in(await self._home(platform, user_id, workspace))
        return [p.name for p in found if p.name.lower().startswith(prefix.lower())]

    async def thread_owner(self, platform: str, thread_id: int) -> str | None:
        thread = await self.store.find_thread(platform, thread_id)
        if thread is None:
            return None
        return (await self.store.get_user(thread.owner_id)).platform_user_id

    async def can_act(self, platform: str, user_id: str, thread_id: int) -> bool:
        """May this user act on the post in this platform thread: its author, an admin, or (review
        on) a reviewer of its workspace? False for threads that are not posts. Front ends ask
        before forwarding a reaction."""
        thread = await self.store.find_thread(platform, thread_id)
        if thread is None:
            return False
        if self.config.is_admin(platform, user_id):
            return True
        user = await self.store.user(platform, user_id)
        if thread.owner_id == user.id:
            return True
        role = await self.store.role_of(thread.workspace_id, user.id)
        if role == WorkspaceRole.ADMIN:
            return True
        return role is not None and role.reviews and (await self.store.get_workspace(thread.workspace_id)).review

    async def bind_thread(self, thread_db_id: int, *, channel_id: int | None, thread_id: int | None) -> None:
        """The front end created the platform thread of a post: record it and start its jobs
        (those whose persona is ready; the others start when it is)."""
        await self.store.bind_thread(thread_db_id, channel_id, thread_id)
        for job in await self.store.thread_jobs(thread_db_id):
            self.delivery.forget_route(job.id)
        await self._start_released(await self.store.release_held(thread_db_id))

    async def abandon_thread(self, thread_db_id: int) -> None:
        """The front end could not open the platform thread of a post: cancel its waiting jobs
        (nothing to deliver, nothing counted against the user's limit) and close the post."""
        for job in await self.store.thread_jobs(thread_db_id):
            error = "the post's thread could not be opened"
            await cancel_job(self.store, self.queue, self.queue.bus, job.id, error=error)
            await self.store.confirm_delivery(job.id)
        await self.store.set_thread_status(thread_db_id, ThreadStatus.CANCELLED)

    async def export_zip(self, thread: Thread) -> bytes:
        """Approved images plus manifest.json describing every turn of the thread."""
        return await build_export(self.store, self.blobs, thread)

    # -- the entry point ---------------------------------------------------------------------
    async def handle(self, event: Event) -> list[Action]:
        """The actions answering ``event``. Never raises: refused input gets its message, and an
        unexpected error is logged with its traceback and answered with a short message."""
        metrics.INBOUND.labels(event.platform, str(event.kind)).inc()
        try:
            return await self._handle(event)
        except Exception:
            log.exception("handling a %s from %s:%s failed", event.kind, event.platform, event.user_id)
            where = Where(
                platform=event.platform, user_id=event.user_id, channel_id=event.channel_id, thread_id=event.thread_id
            )
            return [Reply(where=where, text=TEXT_UNEXPECTED, private=True)]

    async def _handle(self, event: Event) -> list[Action]:
        where = Where(platform=event.platform, user_id=event.user_id, channel_id=event.channel_id)
        try:
            key, _ = workspaces.event_key(event)
        except InputError as exc:
            return [Reply(where=where, text=f"⚠️ {exc}", private=True)]
        # a known user, their workspace, role and waiting notices: one read (the usual case)
        known = await self.store.known_context(event.platform, event.user_id, key)
        if known is not None and event.user_name in ("", known.user.display_name):
            user = known.user
        else:
            user = await self.store.user(event.platform, event.user_id, event.user_name)
        workspace, role = await workspaces.resolve(self.store, self.config, event, user, known)
        ctx = Ctx(event=event, user=user, workspace=workspace, role=role)
        waiting = known is None or known.notices
        notices = [ctx.reply(f"📣 {text}") for text in await self.store.take_notices(user.id)] if waiting else []
        return notices + await self._run(ctx)

    async def _run(self, ctx: Ctx) -> list[Action]:
        event = ctx.event
        try:
            if event.kind == EventKind.MESSAGE:
                return await posts.message(self, ctx)
            word = (event.command or "").lower()
            command = find(word)
            if event.kind == EventKind.REACTION and (command is None or not command.result_action):
                return [ctx.error(f"Unknown action {word!r}.")]
            if command is None:
                return [ctx.error(f"Unknown command /{word}. Try /help.")]
            row, words = resolve(command, event.options, event.args)
            group = command if row is not command else None
            assert row.handler is not None, f"/{command.name} {row.name} has no handler"
            ctx.usage = usage(row, group)
            return await row.handler(self, ctx, **bind(row, words, event.options, group))
        except InputError as exc:
            return [ctx.error(str(exc))]

    # -- jobs --------------------------------------------------------------------------------
    async def submit(
        self,
        ctx: Ctx,
        spec: JobSpec,
        *,
        thread: Thread | None,
        where: Where,
        turn: dict | None = None,
        hold: bool = False,
    ) -> Progress:
        """Store the job and its turn (one transaction) first, then queue it: a crash loses nothing.
        With ``hold`` the job waits until its platform thread exists and its persona is ready.
        Returns the one "queued" progress the front end shows for it."""
        await self.store.create_job(
            spec.job_id,
            str(spec.kind),
            spec.model_dump(mode="json"),
            user_id=ctx.user.id,
            thread_id=thread.id if thread else None,
            platform=ctx.event.platform,
            channel_id=ctx.event.channel_id,
            status=JobStatus.HELD if hold else JobStatus.QUEUED,
            turn={"thread_id": thread.id, "seed": spec.seed, **turn} if turn is not None and thread else None,
        )
        if hold:
            return Progress(where=where, job_id=spec.job_id, state="queued", text="waiting for its persona")
        await self.queue.enqueue(spec)
        position = await self.queue.position(spec.job_id)
        return Progress(where=where, job_id=spec.job_id, state="queued", position=position)

    async def finish(self, job_id: str, status: JobStatus, *, error: str) -> bool:
        """End a job that no queue holds (held, or lost by redis): recorded once, published once."""
        return await finish_job(self.store, self.queue.bus, job_id, status, error=error)

    async def _job_finished(self, job: Job) -> None:
        """A persona's create job ended: start the posts that waited for it, or fail them. A
        post's first images ended: start the edit that waited for them, or fail it."""
        if job.kind == JobKind.GENERATE:
            await self._first_images_finished(job)
            return
        if job.kind != JobKind.CREATE_PERSONA:
            return
        persona_id = int(job.spec.get("persona", {}).get("persona_id") or 0)
        waiting = await self.store.held_jobs_for_persona(persona_id)
        if not waiting:
            return
        persona = await self.store.get_persona(persona_id)
        if persona.status != "ready":
            for held in waiting:
                await self.finish(held.id, JobStatus.FAILED, error=f"persona {persona.name} could not be created")
            return
        threads = {held.thread_id for held in waiting if held.thread_id is not None}
        for thread_db_id in sorted(threads):
            thread = await self.store.get_thread(thread_db_id)
            if thread.platform in self.config.threaded_platforms and thread.thread_id is None:
                continue  # bind_thread starts it
            await self.release_if_ready(thread_db_id)

    async def _first_images_finished(self, job: Job) -> None:
        turn = await self.store.turn_for_job(job.id)
        waiting = await self.store.held_jobs_waiting_for(turn.id) if turn is not None else []
        if turn is None or not waiting:
            return
        if job.status != JobStatus.DONE or not turn.image_keys:
            for held in waiting:
                await self.finish(held.id, JobStatus.FAILED, error="the first images did not come; send the edit again")
            return
        for held in waiting:  # the images it waited for are its context now
            spec = dict(held.spec, context_keys=list(turn.image_keys))
            await self.store.set_job_spec(held.id, spec)
        await self.release_if_ready(turn.thread_id)

    async def release_if_ready(self, thread_db_id: int) -> None:
        """Start the post's held jobs whose persona is ready (storage decides which are)."""
        await self._start_released(await self.store.release_held(thread_db_id))

    async def _start_released(self, jobs: Sequence[Job]) -> None:
        """Queue jobs that were held, with their persona as it is now, and tell their front end."""
        for job in jobs:
            spec = JobSpec.model_validate(job.spec)
            if spec.persona.persona_id:
                fresh = self.persona_spec(await self.store.get_persona(spec.persona.persona_id))
                if fresh != spec.persona:
                    spec.persona = fresh
                    await self.store.set_job_spec(job.id, spec.model_dump(mode="json"))
            await self.queue.enqueue(spec)
            await self.delivery.announce_queued(job.id, await self.queue.position(job.id))

    # -- small helpers for handlers ----------------------------------------------------------
    @staticmethod
    def help_text() -> str:
        return help_text()

    def params(self, user: User, thread: Thread | None) -> RenderParams:
        return effective_params(self.config.engine_model, user.settings, thread.settings if thread else None)

    @staticmethod
    def seed(user: User, thread: Thread | None) -> int:
        return pick_seed(user.settings, thread.settings if thread else None)

    @staticmethod
    def persona_spec(persona: Persona) -> PersonaSpec:
        return persona_spec(persona)

    async def image(self, key: str, filename: str, caption: str = "") -> ImageOut:
        return await image_out(self.blobs, key, filename, caption)


__all__ = ["Conversation", "ConversationConfig"]
