"""Live previews: latent -> RGB per family, when they are made (steps, interval, PREVIEWS=off), and
the transient cache around the job runner (a cancelled job keeps its last one, a done job none)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from diffusers import Flux2KleinPipeline, FluxKontextPipeline
from PIL import Image

from engine.config import EngineConfig
from engine.jobs.events import Cancelled, Done, Running
from engine.jobs.progress import LocalBus, RedisBus
from engine.jobs.runner import JobRunner
from engine.previews import MemoryPreviews, PreviewFrame, RedisPreviews
from engine.render.engine import Engine
from engine.render.families import KLEIN, KONTEXT
from engine.render.latent_rgb import FLUX1_RGB, FLUX2_RGB
from engine.render.previews import TokenProjection, clean_estimate, preview_image, preview_steps, project
from engine.specs import JobKind, JobSpec, PersonaSpec, RenderParams
from storage.blobs import BlobStore
from storage.db import Database
from storage.repository import Store
from storage.settings import load_settings

STEPS = 8  # previews after steps 2, 4 and 6


class FakeClock:
    """Seconds that pass only when the test says so (one per denoising step here)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def klein_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("klein-previews")
    eng = Engine(EngineConfig(model="tiny-klein", lora_dir=root / "loras"), BlobStore(root / "b"))
    eng.load()
    return eng


@pytest.fixture(params=["tiny", "tiny-klein"])
def any_engine(request: pytest.FixtureRequest, engine: Engine) -> Iterator[Engine]:
    """The session's tiny Kontext engine, or this module's tiny klein engine, with its preview settings restored."""
    eng = engine if request.param == "tiny" else request.getfixturevalue("klein_engine")
    saved = (eng.previews, eng.preview_min_interval_s, eng.preview_clock)
    yield eng
    eng.previews, eng.preview_min_interval_s, eng.preview_clock = saved


def _spec(eng: Engine, count: int = 1, steps: int = STEPS) -> JobSpec:
    params = RenderParams(steps=steps, guidance=2.5, width=96, height=64, max_tries=1)
    persona = PersonaSpec(archetype="sweet", seed=3)
    spec = JobSpec(job_id=uuid.uuid4().hex, kind=JobKind.GENERATE, persona=persona, prompt="a mug", count=count,
                   params=params, seed=5)  # fmt: skip
    return JobSpec.model_validate_json(spec.model_dump_json())


def _run(eng: Engine, spec: JobSpec, clock: FakeClock | None = None) -> tuple[list[PreviewFrame], list[int]]:
    """Run ``spec``; the previews made and the job-wide steps reported (the clock ticks 1 s a step)."""
    frames: list[PreviewFrame] = []
    steps: list[int] = []

    def on_progress(step: int, total: int, note: str | None = None) -> None:
        steps.append(step)
        if clock is not None:
            clock.now += 1.0

    eng.run(spec, on_progress=on_progress, on_preview=frames.append)
    return frames, steps


# -- latents -> RGB ----------------------------------------------------------------------------


def test_preview_steps_are_a_quarter_half_and_three_quarters_never_the_last() -> None:
    assert preview_steps(28) == {7, 14, 21}
    assert preview_steps(8) == {2, 4, 6}
    assert preview_steps(4) == {1, 2, 3}
    assert preview_steps(2) == {1}
    assert preview_steps(1) == frozenset()


def test_factors_fit_each_familys_latent_channels(engine: Engine, klein_engine: Engine) -> None:
    assert (FLUX1_RGB.channels, FLUX2_RGB.channels) == (16, 32)
    assert (KONTEXT.latent_rgb, KLEIN.latent_rgb) == (FLUX1_RGB, FLUX2_RGB)
    assert engine.pipeline.family.latent_rgb.channels == engine.pipeline.pipe.vae.config.latent_channels
    assert klein_engine.pipeline.family.latent_rgb.channels == klein_engine.pipeline.pipe.vae.config.latent_channels
    with pytest.raises(ValueError, match="projects 16 channels, the latents have 32"):
        project(torch.zeros(1, 32, 4, 4), FLUX1_RGB)


def test_kontext_packed_tokens_unpack_to_the_spatial_latents(engine: Engine) -> None:
    spatial = torch.randn(2, 16, 8, 12)  # a 96 x 64 render: 1/8 of its size
    packed = FluxKontextPipeline._pack_latents(spatial, 2, 16, 8, 12)
    assert packed.shape == (2, 4 * 6, 64)
    assert torch.equal(KONTEXT.spatial_latents(engine.pipeline.pipe, packed, width=96, height=64), spatial)


def test_klein_patchified_tokens_unpatchify_to_the_spatial_latents(klein_engine: Engine) -> None:
    pipe = klein_engine.pipeline.pipe
    spatial = torch.randn(2, 32, 8, 12)
    patches = Flux2KleinPipeline._patchify_latents(spatial)  # (2, 128, 4, 6)
    tokens = Flux2KleinPipeline._pack_latents(patches)  # (2, 24, 128), what the step callback sees
    assert tokens.shape == (2, 24, 128)
    assert torch.equal(KLEIN.spatial_latents(pipe, tokens, width=96, height=64), spatial)
    ids = Flux2KleinPipeline._prepare_latent_ids(patches)  # the pipeline's own token placement agrees
    assert torch.equal(Flux2KleinPipeline._unpack_latents_with_ids(tokens, ids, 4, 6), patches)
    with pytest.raises(ValueError, match="24 tokens, a 64x64 render has 16"):
        KLEIN.spatial_latents(pipe, tokens, width=64, height=64)


@pytest.mark.parametrize("family", ["kontext", "klein"])
def test_the_token_space_projection_equals_unpacking_then_projecting(
    family: str, engine: Engine, klein_engine: Engine
) -> None:
    eng = engine if family == "kontext" else klein_engine
    pipe, fam = eng.pipeline.pipe, eng.pipeline.family
    torch.manual_seed(1)
    tokens = torch.randn(2, 4 * 6, pipe.transformer.config.in_channels)  # a 96 x 64 render, two images
    reference = project(fam.spatial_latents(pipe, tokens, width=96, height=64), fam.latent_rgb)
    fast = TokenProjection.of(fam, pipe, tokens.shape[-1], tokens.device)
    frames = fast.frames(fast.apply(tokens), width=96, height=64, patch=16)
    assert frames.shape == reference.shape == (2, 8, 12, 3)
    assert (frames.int() - reference.int()).abs().max() <= 1  # float rounding only


def test_projection_is_the_factors_plus_bias_mapped_to_bytes() -> None:
    latents = torch.zeros(1, 16, 2, 3)
    latents[0, 4, 1, 2] = 2.0
    pixels = project(latents, FLUX1_RGB)
    assert pixels.shape == (1, 2, 3, 3) and pixels.dtype == torch.uint8
    expect_zero = [round((b + 1) * 127.5) for b in FLUX1_RGB.bias]
    assert pixels[0, 0, 0].tolist() == expect_zero
    expect = [round((2.0 * f + b + 1) * 127.5) for f, b in zip(FLUX1_RGB.factors[4], FLUX1_RGB.bias, strict=True)]
    assert pixels[0, 1, 2].tolist() == expect


def test_a_batch_previews_as_a_grid_of_at_most_four_longest_side_512() -> None:
    one = preview_image(torch.full((1, 8, 12, 3), 200, dtype=torch.uint8))
    assert one.size == (512, 341)
    frames = torch.zeros(5, 8, 12, 3, dtype=torch.uint8)
    for i in range(5):
        frames[i] = 40 * (i + 1)
    grid = preview_image(frames)
    assert grid.size == (512, 341)  # 2 x 2 of 12 x 8: 24 x 16, scaled up
    assert grid.getpixel((128, 85)) == (40, 40, 40) and grid.getpixel((384, 256)) == (160, 160, 160)
    assert preview_image(frames[:2]).size == (512, 171)  # one row of two


def test_clean_estimate_undoes_one_euler_step(engine: Engine) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(engine.pipeline.pipe.scheduler.config)
    scheduler.set_timesteps(STEPS, mu=0.8)
    pipe = type("P", (), {"scheduler": scheduler})()
    torch.manual_seed(0)
    x, velocity = torch.randn(1, 24, 64), torch.randn(1, 24, 64)
    x = scheduler.step(velocity, scheduler.timesteps[0], x).prev_sample  # step 1 (so step 2's sigma is next)
    before = x.clone()
    after = scheduler.step(velocity, scheduler.timesteps[1], x).prev_sample  # step 2
    sigma = float(scheduler.sigmas[1])
    expected = before - sigma * velocity
    assert torch.allclose(clean_estimate(pipe, 2, after, before), expected, atol=1e-4)
    assert clean_estimate(pipe, 2, after, None) is after  # no previous latents: the latents themselves


# -- when: both tiny families through the Engine --------------------------------------------------------


def test_previews_come_at_a_quarter_half_and_three_quarters_only(any_engine: Engine) -> None:
    clock = FakeClock()
    any_engine.preview_clock, any_engine.preview_min_interval_s = clock, 2.0
    frames, steps = _run(any_engine, _spec(any_engine), clock)
    assert steps == list(range(1, STEPS + 1))
    assert [f.step for f in frames] == [2, 4, 6]
    assert [f.seq for f in frames] == [1, 2, 3] and {f.total for f in frames} == {STEPS}
    assert [f.percent for f in frames] == [25, 50, 75]
    image = Image.open(io.BytesIO(frames[0].jpeg))
    assert image.format == "JPEG" and image.size == (512, 341) == (frames[0].width, frames[0].height)


def test_the_minimum_interval_skips_previews_that_come_too_soon(any_engine: Engine) -> None:
    clock = FakeClock()
    any_engine.preview_clock, any_engine.preview_min_interval_s = clock, 3.0  # 2 s apart is too soon
    frames, _ = _run(any_engine, _spec(any_engine), clock)
    assert [f.step for f in frames] == [2, 6]


def test_a_batch_of_variations_gives_one_grid_per_preview(any_engine: Engine) -> None:
    clock = FakeClock()
    any_engine.preview_clock, any_engine.preview_min_interval_s = clock, 0.0
    frames, _ = _run(any_engine, _spec(any_engine, count=3), clock)
    # image 1 alone (its steps 1-8), then variations 2 and 3 as one batch (job-wide steps 10, 12, ..., 24)
    assert [(f.step, f.images) for f in frames] == [(2, 1), (4, 1), (6, 1), (12, 2), (16, 2), (20, 2)]
    assert {f.total for f in frames} == {3 * STEPS}
    assert (frames[0].width, frames[0].height) == (512, 341) and (frames[-1].width, frames[-1].height) == (512, 171)


def test_previews_off_makes_none_and_changes_nothing_else(any_engine: Engine) -> None:
    spec = _spec(any_engine)
    any_engine.preview_min_interval_s, any_engine.previews = 0.0, True
    with_previews = any_engine.run(spec, on_preview=lambda frame: None)
    any_engine.previews = False
    frames, steps = _run(any_engine, spec)
    assert frames == [] and steps == list(range(1, STEPS + 1))
    without = any_engine.run(spec)
    assert with_previews.image_keys == without.image_keys  # previews only look at the latents


def test_previews_off_in_the_environment_reaches_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREVIEWS", "off")
    monkeypatch.setenv("PREVIEW_MIN_INTERVAL_S", "5")
    settings = load_settings(lora_dir=tmp_path / "loras")
    eng = Engine.from_settings(settings, BlobStore(tmp_path / "blobs"))
    assert (eng.previews, eng.preview_min_interval_s) == (False, 5.0)
    monkeypatch.setenv("PREVIEWS", "sometimes")
    with pytest.raises(ValueError, match=r"setting PREVIEWS: .*boolean"):
        load_settings(lora_dir=tmp_path / "loras")


# -- the transient cache around the job runner ------------------------------------------------------


class _CancelAtFirstPreview:
    """The real engine, with the user's cancel arriving right after the first preview is shown."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load(self) -> None:
        self.engine.load()

    def run(self, spec, on_progress=None, cancel=None, on_model_free=None, on_preview=None):
        def preview(frame: PreviewFrame) -> None:
            on_preview(frame)
            cancel.set()

        return self.engine.run(spec, on_progress, cancel, on_model_free, on_preview=preview)


async def _store(tmp_path: Path, spec: JobSpec) -> Store:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'previews.db'}")
    await db.upgrade()
    store = Store(db)
    await store.create_job(
        spec.job_id, "generate", spec.model_dump(mode="json"), user_id=None, thread_id=None, platform="console"
    )
    return store


async def _execute(runner: JobRunner, spec: JobSpec) -> list:
    """Run the job through ``runner``; every event its bus published, in order."""
    bus, seen = runner.bus, []
    publish = bus.publish

    async def recording(event) -> None:
        seen.append(event)
        await publish(event)

    bus.publish = recording
    try:
        await runner.execute(spec.model_dump(mode="json"))
    finally:
        del bus.publish
    return seen


async def test_cancel_mid_render_keeps_the_last_preview(tmp_path: Path, engine: Engine, monkeypatch) -> None:
    monkeypatch.setattr(engine, "preview_min_interval_s", 0.0)
    spec = _spec(engine)
    bus = LocalBus()
    runner = JobRunner(_CancelAtFirstPreview(engine), await _store(tmp_path, spec), bus)
    seen = await _execute(runner, spec)
    assert isinstance(seen[-1], Cancelled)
    assert {e.preview for e in seen if isinstance(e, Running) and e.preview} == {1}
    kept = await bus.previews.get(spec.job_id)
    assert kept is not None and (kept.seq, kept.step) == (1, 2)
    assert Image.open(io.BytesIO(kept.jpeg)).size == (512, 341)


async def test_a_done_job_leaves_no_preview_even_after_a_killed_attempt(
    tmp_path: Path, engine: Engine, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis.asyncio as aioredis

    monkeypatch.setattr(engine, "preview_min_interval_s", 0.0)
    spec = _spec(engine)
    client = aioredis.Redis.from_url(redis_url)
    try:
        bus = RedisBus(client, worker="w1")
        stale = PreviewFrame(spec.job_id, 7, 3, STEPS, b"\xff\xd8stale", 8, 8)  # a killed worker's attempt left it
        await bus.previews.put(stale)
        assert await bus.previews.get(spec.job_id) == stale
        runner = JobRunner(engine, await _store(tmp_path, spec), bus)
        seen = await _execute(runner, spec)
        assert isinstance(seen[-1], Done)
        announced = [e.preview for e in seen if isinstance(e, Running) and e.preview]
        assert announced and max(announced) == 3 and 7 not in announced  # this attempt's previews, numbered anew
        assert await bus.previews.get(spec.job_id) is None
        assert await client.exists(f"persona-studio:preview:{spec.job_id}") == 0
    finally:
        await client.aclose()


async def test_the_caches_are_bounded(redis_url: str) -> None:
    import redis.asyncio as aioredis

    memory = MemoryPreviews(jobs=2)
    for n in range(3):
        await memory.put(PreviewFrame(f"job-{n}", 1, 1, 4, b"jpeg", 4, 4))
    assert len(memory) == 2 and await memory.get("job-0") is None and await memory.get("job-2") is not None
    client = aioredis.Redis.from_url(redis_url)
    try:
        cache = RedisPreviews(client, ttl_s=30)
        await cache.put(PreviewFrame("job-r", 2, 4, 8, b"\x00\xffjpeg", 512, 341, images=2, ts=1.5))
        assert 0 < await client.ttl("persona-studio:preview:job-r") <= 30
        back = await cache.get("job-r")
        assert back == PreviewFrame("job-r", 2, 4, 8, b"\x00\xffjpeg", 512, 341, images=2, ts=1.5)
        assert back.meta()["percent"] == 50 and "jpeg" not in back.meta()
    finally:
        await client.aclose()
