"""Region edit jobs on the Engine, both families: masks made and stored before the render (and
reused by a retry), outside-mask pixels exact, try-on with a library product, bad masks refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.config import EngineConfig
from engine.render.engine import Engine
from engine.render.regions.masks import NothingFound, RegionError
from engine.specs import JobKind, JobSpec, PersonaSpec, ReferenceSpec, RegionSpec
from storage.blobs import BlobStore

pytestmark = pytest.mark.slow
_counter = iter(range(1_000_000))


@pytest.fixture(scope="module")
def klein_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("klein-regions")
    eng = Engine(EngineConfig(model="tiny-klein", lora_dir=root / "loras"), BlobStore(root / "blobs"))
    eng.load()
    return eng


@pytest.fixture(params=["tiny", "tiny-klein"])
def any_engine(request: pytest.FixtureRequest, engine: Engine, klein_engine: Engine) -> Engine:
    return engine if request.param == "tiny" else klein_engine


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _post(engine: Engine) -> tuple[PersonaSpec, list[str]]:
    rng = np.random.default_rng(5)
    images = [Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)) for _ in range(2)]
    portrait = engine.blobs.put(_png(Image.new("RGB", (64, 64), (200, 170, 150))))
    persona = PersonaSpec(persona_id=1, archetype="sweet", seed=1, reference_key=portrait)
    return persona, [engine.blobs.put(_png(image)) for image in images]


def _spec(engine: Engine, persona: PersonaSpec, keys: list[str], region: RegionSpec, **fields) -> JobSpec:
    fields.setdefault("prompt", "make it red")
    spec = JobSpec(
        job_id=f"region-{next(_counter)}", kind=JobKind.EDIT, persona=persona, thread_id=77,
        context_keys=keys, params=engine.default_params(), region=region, **fields,
    )  # fmt: skip
    return JobSpec.model_validate_json(spec.model_dump_json())


def _mask_key(engine: Engine, size=(40, 32), box=(8, 6, 24, 20)) -> str:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return engine.blobs.put(_png(mask))


def test_a_mask_edit_keeps_every_pixel_outside_and_records_its_masks_first(any_engine: Engine) -> None:
    persona, keys = _post(any_engine)
    region = RegionSpec(mask_key=_mask_key(any_engine))  # half the image's size: resized
    recorded: list[list[str]] = []
    result = any_engine.run(_spec(any_engine, persona, keys, region, seed=9), on_region_masks=recorded.append)
    assert len(recorded) == 1 and len(recorded[0]) == 1
    stored = np.asarray(any_engine.blobs.open_image(recorded[0][0])) > 0
    assert stored.shape == (64, 80) and stored[20, 30] and not stored[60, 70]
    before = np.asarray(any_engine.blobs.open_image(keys[0]))
    after = np.asarray(any_engine.blobs.open_image(result.image_keys[0]))
    assert after.shape == before.shape
    outside = np.ones(stored.shape, bool)
    outside[6:46, 10:54] = False  # the mask, dilated a little, is inside this box
    assert (after[outside] == before[outside]).all()
    assert (after[stored] != before[stored]).any()
    assert result.image_keys[1] == keys[1] and result.region_full == [False]
    # a retry (or a regenerate) with the recorded masks repaints the same region: same seed, same image
    again = _spec(any_engine, persona, keys, region.model_copy(update={"mask_keys": recorded[0]}), seed=9)
    calls: list[list[str]] = []
    assert any_engine.run(again, on_region_masks=calls.append).image_keys == result.image_keys
    assert calls == []  # nothing recomputed


def test_words_mark_every_targeted_image(engine: Engine) -> None:
    persona, keys = _post(engine)
    engine.segmenter().threshold = 0.0  # the tiny detector's scores are random
    recorded: list[list[str]] = []
    result = engine.run(
        _spec(engine, persona, keys, RegionSpec(words="top"), targets=[0, 1]), on_region_masks=recorded.append
    )
    assert len(recorded[0]) == 2 and len(result.image_keys) == 2
    for mask_key in recorded[0]:
        assert (np.asarray(engine.blobs.open_image(mask_key)) > 0).any()
    assert result.image_keys[0] != keys[0] and result.image_keys[1] != keys[1]


def test_tryon_with_a_library_product(klein_engine: Engine) -> None:
    persona, keys = _post(klein_engine)
    garment = klein_engine.blobs.put(_png(Image.new("RGB", (48, 64), (20, 40, 200))))
    spec = _spec(
        klein_engine, persona, keys, RegionSpec(tryon=True, mask_key=_mask_key(klein_engine)), prompt="",
        references=[ReferenceSpec(role="product", key=garment, name="blue-shirt")],
    )  # fmt: skip
    result = klein_engine.run(spec)
    assert result.image_keys[0] != keys[0] and result.identity_notes[0]


def test_bad_regions_are_refused_before_anything_is_rendered(engine: Engine) -> None:
    persona, keys = _post(engine)
    renders = engine.stats["renders"]
    empty = engine.blobs.put(_png(Image.new("L", (80, 64), 0)))
    with pytest.raises(RegionError, match="covers nothing of image 1"):
        engine.run(_spec(engine, persona, keys, RegionSpec(mask_key=empty)))
    tall = engine.blobs.put(_png(Image.new("L", (20, 80), 255)))
    with pytest.raises(RegionError, match="shapes differ"):
        engine.run(_spec(engine, persona, keys, RegionSpec(mask_key=tall)))
    strict = engine.segmenter()
    strict.threshold, saved = 1.0, strict.threshold
    try:
        with pytest.raises(NothingFound, match="no 'hat' found in image 2"):
            engine.run(_spec(engine, persona, keys, RegionSpec(words="hat"), targets=[1]))
    finally:
        strict.threshold = saved
    assert engine.stats["renders"] == renders


def test_a_mask_covering_everything_is_a_normal_edit(engine: Engine) -> None:
    persona, keys = _post(engine)
    everything = engine.blobs.put(_png(Image.new("L", (80, 64), 255)))
    result = engine.run(_spec(engine, persona, keys, RegionSpec(mask_key=everything)))
    assert result.region_full == [True] and result.image_keys[0] != keys[0]
