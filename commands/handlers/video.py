"""``/video [#N] [seconds=3..5] [motion=<words>]`` (视频): a clip of a post's approved image.

The clip is a turn of its own kind (``video``) that branches from the approved turn: undo returns
to that turn, 🔁 renders the clip again with a new seed (a new ``video`` turn from the same
parent), ✅ approves it and /export then carries the MP4. The job goes to the video queue; the
per-user limits count it like any job, and /cancel stops it.
"""

from __future__ import annotations

import random
import uuid

from commands import rules
from commands.context import Ctx
from commands.events import Action
from commands.ports import Rendering
from commands.validation import InputError, check_text
from engine.specs import JobKind, JobSpec, default_video_params
from storage.models import Thread, Turn, TurnKind, TurnStatus


async def video(
    conv: Rendering, ctx: Ctx, *, image: str | None, seconds: float | None, motion: str | None
) -> list[Action]:
    thread = await rules.owned_thread(conv, ctx)
    rules.check_open(thread)
    approved = await approved_turn(conv, thread)
    if approved is None:
        raise InputError("approve a result first (✅ /approve): /video animates the post's approved image")
    index = _image_index(image, len(approved.image_keys))
    words = check_text(motion, "motion") if motion else ""
    await rules.check_idle(conv, thread)
    await rules.check_limits(conv, ctx.user)
    params = default_video_params(conv.config.video_model)
    if seconds is not None:
        params = params.model_copy(update={"seconds": float(seconds)})
    return await submit_clip(
        conv, ctx, thread, approved, index, words, params.model_dump(), conv.seed(ctx.user, thread)
    )


async def submit_clip(
    conv: Rendering,
    ctx: Ctx,
    thread: Thread,
    parent: Turn,
    index: int,
    motion: str,
    video: dict,
    seed: int,
) -> list[Action]:
    """Queue the clip job of image ``index`` of ``parent`` and its pending ``video`` turn."""
    persona = await conv.store.get_persona(thread.persona_id)
    prompt = f"{thread.prompt}. {motion}" if motion else thread.prompt
    spec = JobSpec(
        job_id=uuid.uuid4().hex,
        kind=JobKind.VIDEO,
        user_id=ctx.user.id,
        thread_id=thread.id,
        persona=conv.persona_spec(persona),
        prompt=prompt,
        context_keys=[parent.image_keys[index]],
        targets=[index],
        seed=seed,
        params=conv.params(ctx.user, thread),
        video=video,
    )
    assert spec.video is not None
    where = ctx.where_thread(thread)
    turn = dict(
        parent_id=parent.id,
        kind=TurnKind.VIDEO,
        instruction=motion or "video",
        params={"source_index": index, "motion": motion, "request": spec.video.model_dump()},
        references=list(parent.references or []),
    )
    queued = await conv.submit(ctx, spec, thread=thread, turn=turn, where=where)
    text = (
        f"🎬 A {spec.video.seconds:g} s clip of image {index + 1} at {spec.video.fps} fps"
        f"{f': {motion}' if motion else ''} ({spec.video.frames} frames)…"
    )
    return [ctx.reply(text, where=where), queued]


async def regen_clip(conv: Rendering, ctx: Ctx, thread: Thread, turn: Turn) -> list[Action]:
    """🔁 on a clip: the same clip request from the same approved turn, with a new seed."""
    if turn.parent_id is None:
        raise InputError("this clip has no image to start from")
    parent = await conv.store.get_turn(turn.parent_id)
    params = turn.params or {}
    index = int(params.get("source_index", 0))
    if not 0 <= index < len(parent.image_keys):
        raise InputError("the image this clip animated is gone")
    video = dict(params.get("request") or default_video_params(conv.config.video_model).model_dump())
    return await submit_clip(
        conv, ctx, thread, parent, index, str(params.get("motion") or ""), video, random.randrange(2**31)
    )


async def approved_turn(conv: Rendering, thread: Thread) -> Turn | None:
    """The image turn a clip starts from: the current turn if approved, else the latest approved one."""
    current = await rules.current_turn(conv, thread)
    if current is not None and current.approved and current.kind != TurnKind.VIDEO:
        return current
    approved = [
        t
        for t in await conv.store.turns(thread.id)
        if t.approved and t.kind != TurnKind.VIDEO and t.status == TurnStatus.DONE and t.image_keys
    ]
    return max(approved, key=lambda t: t.id) if approved else None


def _image_index(word: str | None, count: int) -> int:
    if not word:
        return 0
    text = word.strip().lstrip("#")
    if not text.isdigit() or not 1 <= int(text) <= count:
        raise InputError(f"the approved result has {count} image(s); use #1 to #{count}")
    return int(text) - 1
