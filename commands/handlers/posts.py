"""Posts and their turns: ``/post``, edit instructions, 🔁 regen, ↩️ undo, ❌ cancel (✅ approve and
review: commands.handlers.review)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import replace

from commands import references as refs
from commands import regions, rules
from commands.context import Ctx
from commands.delivery import RESULT_BUTTONS
from commands.events import Action, Images, OpenThread, Where
from commands.handlers import edits
from commands.handlers.video import regen_clip
from commands.job_cancel import cancel_job
from commands.outputs import turn_images
from commands.ports import Cancelling, Imaging, Rendering, Stored
from commands.validation import InputError, check_text
from engine.specs import JobKind, JobSpec, ReferenceRole, ReferenceSpec
from storage.activity import PostAction
from storage.models import Job, Thread, ThreadStatus, Turn, TurnKind, TurnStatus


async def post(
    conv: Rendering, ctx: Ctx, *, persona: str, prompt: str, count: int, product: str | None
) -> list[Action]:
    products = refs.split_names(product)
    prompt = check_text(prompt, "prompt")
    chosen = await rules.own_persona(conv, ctx, persona)
    if chosen.status == "failed":
        raise InputError(f"persona {chosen.name} could not be created; create it again with /persona create")
    refs.check_attachments(ctx.event.attachments)
    library = await refs.library(conv, ctx.workspace.id, products)
    waiting = refs.pending_refs(ctx.user)
    # an image attached to a post without a role is its scene (as before references had roles)
    roles = [r.role for r in library + waiting] + [a.role or ReferenceRole.SCENE for a in ctx.event.attachments]
    if roles.count(ReferenceRole.SCENE) > 1:
        raise InputError("a post takes one scene image; send the others as product or face images")
    said = [replace(a, role=a.role or ReferenceRole.SCENE) for a in ctx.event.attachments]
    refs.check_limit(conv.config.engine_model, library + waiting, editing=False, attached=said)
    await rules.check_limits(conv, ctx.user)
    stored = await refs.store_attachments(conv, ctx.event.attachments, ReferenceRole.SCENE)
    attached = [ReferenceSpec(role=role or ReferenceRole.SCENE, key=key) for role, key in stored]
    post_refs = refs.dedupe(library + attached + waiting)
    scene_key = refs.one_scene(post_refs)
    params = conv.params(ctx.user, None)
    # on platforms with threads the job waits (held) until the front end has opened the thread;
    # a persona still being created holds it too, until its portrait is stored
    threaded = ctx.event.platform in conv.config.threaded_platforms
    hold = threaded or chosen.status != "ready"
    # the post, its log line and a held first job: one commit (a queued job is queued after it)
    async with conv.store.transaction():
        thread = await conv.store.create_thread(
            platform=ctx.event.platform,
            owner_id=ctx.user.id,
            persona_id=chosen.id,
            title=_title(chosen.name, prompt),
            prompt=prompt,
            channel_id=ctx.event.channel_id,
            scene_key=scene_key,
            references=refs.as_dicts(post_refs),
            workspace_id=ctx.workspace.id,
        )
        await conv.store.log_activity(thread.id, ctx.user.id, PostAction.CREATED, detail=prompt)
        if waiting:
            ctx.user.settings = await conv.store.update_user_settings(ctx.user.id, {refs.PENDING: []})
        spec = JobSpec(
            job_id=uuid.uuid4().hex,
            kind=JobKind.GENERATE,
            user_id=ctx.user.id,
            thread_id=thread.id,
            persona=conv.persona_spec(chosen),
            prompt=prompt,
            count=count,
            context_keys=[scene_key] if scene_key else [],
            seed=conv.seed(ctx.user, None),
            params=params,
            references=post_refs,
        )
        where = Where(
            platform=ctx.event.platform,
            user_id=ctx.event.user_id,
            thread_db_id=thread.id,
            channel_id=ctx.event.channel_id,
        )
        turn = dict(
            parent_id=None,
            kind=TurnKind.GENERATE,
            instruction=prompt,
            params={**params.model_dump(), "count": count},
            references=refs.as_dicts(post_refs),
        )
        if not threaded:
            await conv.store.set_current_thread(ctx.user.id, thread.id)
        queued = await conv.submit(ctx, spec, thread=thread, turn=turn, where=where, hold=True) if hold else None
    if queued is None:
        queued = await conv.submit(ctx, spec, thread=thread, turn=turn, where=where)
    elif not threaded:
        await conv.release_if_ready(thread.id)  # the persona may have become ready meanwhile
    scene = f" with {refs.describe(post_refs)}" if post_refs else ""
    waiting = (
        f"\nPersona {chosen.name} is still being created: the post starts when it's ready."
        if (chosen.status != "ready")
        else ""
    )
    text = f"📸 Post #{thread.id} · {chosen.name}: {prompt}\nRendering {count} image(s){scene}…{waiting}"
    actions: list[Action] = [OpenThread(where=where, title=thread.title, text=text)]
    if not threaded:
        actions.append(queued)
    return actions


async def message(conv: Rendering, ctx: Ctx) -> list[Action]:
    """Plain text: inside a post it is an edit instruction; an image alone waits for the next post
    or edit (its role asked for when the platform did not say it)."""
    thread = await rules.thread_of(conv, ctx)
    if ctx.event.attachments and not ctx.event.text.strip():
        return await refs.park(conv, ctx, ctx.event.attachments)
    if thread is None:
        return [ctx.error("This is not a post thread. Start one with /post <persona> <prompt>, or /help.")]
    return await edit(conv, ctx, thread, ctx.event.text)


async def edit(
    conv: Rendering, ctx: Ctx, thread: Thread, text: str, chosen: Sequence[ReferenceSpec] = ()
) -> list[Action]:
    """An edit instruction (commands.handlers.edits: its leading words choose images, products,
    the role of its attached images, a region or a mask)."""
    return await edits.edit(conv, ctx, thread, edits.read_instruction(text), chosen)


async def regen(conv: Rendering, ctx: Ctx) -> list[Action]:
    """The acted-on turn's job again with a new seed; undo afterwards returns to the turn it replaced."""
    thread, turn = await rules.acted_turn(conv, ctx)
    if turn.status == TurnStatus.PENDING:
        raise InputError("that turn is still rendering; wait for it or ❌ cancel it")
    rules.check_open(thread)
    await rules.check_idle(conv, thread)
    await rules.check_limits(conv, ctx.user)
    if turn.kind == TurnKind.VIDEO:
        return await regen_clip(conv, ctx, thread, turn)
    persona = await conv.store.get_persona(thread.persona_id)
    params = conv.params(ctx.user, thread)
    base_kind = turn.kind if turn.kind != TurnKind.REGENERATE else str(turn.params.get("of_kind", TurnKind.EDIT))
    before = await _spec_of(conv, turn)
    spec = JobSpec(
        job_id=uuid.uuid4().hex,
        kind=JobKind.REGENERATE,
        of_kind=JobKind.GENERATE if base_kind == TurnKind.GENERATE else JobKind.EDIT,
        user_id=ctx.user.id,
        thread_id=thread.id,
        persona=conv.persona_spec(persona),
        prompt=turn.instruction,
        count=before.count if before else int(turn.params.get("count", len(turn.image_keys) or 1)),
        context_keys=list(before.context_keys) if before else [],
        targets=list(before.targets) if before else [0],
        seed=random.randrange(2**31),  # regenerate = same spec, a new seed
        params=params,
        references=list(before.references) if before else refs.from_dicts(turn.references),
        region=before.region if before else None,  # the same masks (recorded on the job by the worker)
    )
    turn_params = {
        **params.model_dump(),
        "count": spec.count,
        "of_kind": base_kind,
        "replaces": turn.id,  # undo after a regenerate goes back to this result
    }
    if before is not None and before.region is not None:
        turn_params["region"] = regions.region_params(before.region)
    where = ctx.where_thread(thread)
    new_turn = dict(
        parent_id=turn.parent_id,
        kind=TurnKind.REGENERATE,
        instruction=turn.instruction,
        params=turn_params,
        references=refs.as_dicts(spec.references),
    )
    queued = await conv.submit(ctx, spec, thread=thread, turn=new_turn, where=where)
    await conv.store.log_activity(
        thread.id, ctx.user.id, PostAction.REGENERATED, turn_id=turn.id, detail=turn.instruction
    )
    return [ctx.reply(f"🔁 Again with a new seed: {turn.instruction}", where=where), queued]


async def undo(conv: Imaging, ctx: Ctx) -> list[Action]:
    """Back to the state before the acted-on result (the current one by default): its parent,
    or for a regenerate the result it replaced. The next edit branches from there."""
    thread, turn = await rules.acted_turn(conv, ctx)
    rules.check_open(thread)
    await rules.check_idle(conv, thread)
    back_to = turn.params.get("replaces") if turn.kind == TurnKind.REGENERATE else turn.parent_id
    if back_to is None:
        raise InputError("nothing to undo: this is the post's first result")
    previous = await conv.store.get_turn(int(back_to))
    await conv.store.set_current_turn(thread.id, previous.id)
    await conv.store.log_activity(thread.id, ctx.user.id, PostAction.UNDONE, turn_id=previous.id)
    where = ctx.where_thread(thread)
    text = f"↩️ Back to turn #{previous.id} ({previous.instruction}). Your next edit starts from here."
    images = await turn_images(conv.blobs, previous)
    return [Images(where=where, turn_id=previous.id, text=text, images=images, buttons=RESULT_BUTTONS)]


async def cancel(conv: Cancelling, ctx: Ctx) -> list[Action]:
    """The post's running jobs; outside a post (or in one with nothing running) the user's persona training."""
    thread = await rules.thread_of(conv, ctx)
    if thread is None or not await conv.store.thread_jobs(thread.id):
        training = [job for job in await conv.store.user_jobs(ctx.user.id) if job.kind == JobKind.TRAIN_PERSONA]
        if training:
            await _cancel_jobs(conv, training)
            return [ctx.reply(f"❌ Cancelling persona training ({len(training)} job(s))…", where=ctx.where_user())]
    thread = await rules.owned_thread(conv, ctx)
    jobs = await conv.store.thread_jobs(thread.id)
    where = ctx.where_thread(thread)
    if jobs:
        await _cancel_jobs(conv, jobs)
        return [ctx.reply(f"❌ Cancelling {len(jobs)} job(s)…", where=where)]
    await conv.store.set_thread_status(thread.id, ThreadStatus.CANCELLED)
    await conv.store.log_activity(thread.id, ctx.user.id, PostAction.CANCELLED)
    return [ctx.reply("❌ Nothing is running; the post is closed. /post starts a new one.", where=where)]


async def _cancel_jobs(conv: Cancelling, jobs: list[Job]) -> None:
    for job in jobs:
        await cancel_job(conv.store, conv.queue, conv.queue.bus, job.id, error="cancelled", told=True)


async def _spec_of(conv: Stored, turn: Turn) -> JobSpec | None:
    """The job spec that rendered ``turn`` (targets and context live there, not in the turn)."""
    job = await conv.store.job_for_turn(turn.id)
    return JobSpec.model_validate(job.spec) if job is not None else None


def _title(persona: str, prompt: str) -> str:
    title = f"{persona}: {prompt}"
    return title if len(title) <= 90 else title[:89] + "…"
