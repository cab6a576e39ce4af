"""References (product, scene, face) on both engine families, the klein reference limit, and a
persona made from a consented photo."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engine.errors import PhotoHasNoFace
from engine.render.families import KONTEXT
from engine.render.references import compose_context, first_image_inputs
from engine.specs import (
    JobKind,
    JobSpec,
    PersonaSpec,
    ReferenceLimitError,
    ReferenceSpec,
    model_family,
    reference_limit,
)
from tests.engine.conftest import INSIGHTFACE_IMAGES


@pytest.fixture(scope="module")
def klein_engine(tmp_path_factory: pytest.TempPathFactory):  # -> engine.render.engine.Engine
    from engine.config import EngineConfig
    from engine.render.engine import Engine
    from storage.blobs import BlobStore

    root = tmp_path_factory.mktemp("klein")
    eng = Engine(
        EngineConfig(model="tiny-klein", lora_dir=root / "loras", identity_threshold=0.55), BlobStore(root / "blobs")
    )
    eng.load()
    return eng


@pytest.fixture(params=["tiny", "tiny-klein"])
def any_engine(request: pytest.FixtureRequest, engine, klein_engine):
    return engine if request.param == "tiny" else klein_engine


def _drawn(blobs, color: tuple[int, int, int], size: tuple[int, int] = (96, 96)) -> str:
    """A product-like drawing: a coloured disc on a light background."""
    image = Image.new("RGB", size, (235, 235, 235))
    ImageDraw.Draw(image).ellipse((8, 8, size[0] - 8, size[1] - 8), fill=color)
    return blobs.put_image(image)


def _pixels(engine, key: str) -> np.ndarray:
    return np.asarray(engine.blobs.open_image(key).convert("RGB"), dtype=np.int16)


def _persona(engine) -> PersonaSpec:
    mix = engine.draw_mix("sweet", 1)
    return PersonaSpec(archetype="sweet", seed=1, lora_mix=mix)


def _spec(engine, kind: JobKind, refs: list[ReferenceSpec], **kw) -> JobSpec:
    return JobSpec(
        job_id=f"j-{kind}",
        kind=kind,
        persona=kw.pop("persona", _persona(engine)),
        seed=11,
        params=engine.default_params(),
        references=refs,
        **kw,
    )


def test_family_and_limit_of_the_tiny_models() -> None:
    assert (model_family("tiny"), model_family("tiny-klein")) == ("kontext", "klein")
    assert (reference_limit("tiny"), reference_limit("tiny-klein")) == (None, 4)
    assert model_family("some-org/not-in-the-cache") == "kontext"  # offline, nothing cached: the default


def test_changing_the_product_image_changes_the_post_and_the_edit(any_engine) -> None:
    blobs = any_engine.blobs
    red, blue = _drawn(blobs, (210, 30, 30)), _drawn(blobs, (30, 40, 210))
    posts = [
        any_engine.run(
            _spec(
                any_engine,
                JobKind.GENERATE,
                [ReferenceSpec(role="product", key=key, name="mug")],
                prompt="she holds the mug",
            )
        )
        for key in (red, red, blue)
    ]
    first = [_pixels(any_engine, post.image_keys[0]) for post in posts]
    assert np.array_equal(first[0], first[1])  # same seed, same product: same image
    # another product: another image (random tiny weights move few pixels, but the same seed
    # and inputs give the same pixels exactly, so any change is the reference's doing)
    assert not np.array_equal(first[0], first[2])
    current = posts[0].image_keys
    edits = [
        any_engine.run(
            _spec(
                any_engine,
                JobKind.EDIT,
                [ReferenceSpec(role="product", key=key)],
                prompt="hold it up",
                context_keys=current,
            )
        )
        for key in (red, blue)
    ]
    a, b = (_pixels(any_engine, edit.image_keys[0]) for edit in edits)
    assert not np.array_equal(a, b)  # same seed and instruction (deterministic, as above): the product made it


def test_a_scene_reference_works_like_the_scene_image(any_engine) -> None:
    scene = _drawn(any_engine.blobs, (40, 160, 70), (128, 96))
    by_ref = any_engine.run(_spec(any_engine, JobKind.GENERATE, [ReferenceSpec(role="scene", key=scene)], prompt="p"))
    by_ctx = any_engine.run(_spec(any_engine, JobKind.GENERATE, [], prompt="p", context_keys=[scene]))
    assert by_ref.image_keys == by_ctx.image_keys
    assert (
        any_engine.blobs.open_image(by_ref.image_keys[0]).size[0]
        > any_engine.blobs.open_image(by_ref.image_keys[0]).size[1]
    )  # the scene's landscape aspect


def test_klein_refuses_more_than_four_references_before_rendering(klein_engine) -> None:
    blobs = klein_engine.blobs
    products = [ReferenceSpec(role="product", key=_drawn(blobs, (40 * i, 90, 200)), name=f"p{i}") for i in range(3)]
    scene = ReferenceSpec(role="scene", key=_drawn(blobs, (10, 150, 10)))
    portrait = _drawn(blobs, (250, 200, 180))
    persona = _persona(klein_engine).model_copy(update={"reference_key": portrait})
    renders = klein_engine.stats["renders"]
    with pytest.raises(ReferenceLimitError, match=r"at most 4 reference images.*would need 5") as post:
        klein_engine.run(_spec(klein_engine, JobKind.GENERATE, [*products, scene], persona=persona, prompt="p"))
    assert "the persona's portrait" in str(post.value) and "product 'p0'" in str(post.value)
    current = _drawn(blobs, (0, 0, 0))
    with pytest.raises(ReferenceLimitError, match="this edit would need 5"):
        klein_engine.run(
            _spec(klein_engine, JobKind.EDIT, products, persona=persona, prompt="e", context_keys=[current])
        )
    assert klein_engine.stats["renders"] == renders  # refused before any render
    # four in all is fine: portrait + 2 products + scene
    result = klein_engine.run(
        _spec(klein_engine, JobKind.GENERATE, [*products[:2], scene], persona=persona, prompt="p", count=2)
    )
    assert len(result.image_keys) == 2


def test_kontext_composes_any_number_of_references(engine) -> None:
    refs = [ReferenceSpec(role="product", key=_drawn(engine.blobs, (50 * i, 20, 90))) for i in range(5)]
    result = engine.run(_spec(engine, JobKind.GENERATE, refs, prompt="p"))
    assert len(result.image_keys) == 1
    inputs = first_image_inputs(_spec(engine, JobKind.GENERATE, refs), KONTEXT)
    assert inputs.main is None and inputs.extra == [r.key for r in refs]


def test_compose_context_puts_references_in_a_strip_beside_the_main_image() -> None:
    main = Image.new("RGB", (64, 48), (0, 0, 0))
    product = Image.new("RGB", (30, 90), (255, 0, 0))
    composite = compose_context(main, [product, product], 64, 48, 16)
    assert composite.size == (64 + 16, 48)
    assert composite.getpixel((10, 10)) == (0, 0, 0)
    assert composite.getpixel((72, 12))[0] > 200  # the product, in the strip
    alone = compose_context(None, [product], 64, 48, 16)
    assert alone.size == (64, 48) and alone.getpixel((32, 24))[0] > 200


def test_klein_takes_tiny_and_very_wide_product_images(klein_engine) -> None:
    from engine.render.klein_pipeline import fit_reference

    assert min(fit_reference(Image.new("RGB", (20, 20)), 64 * 64, 16).size) >= 64
    wide = fit_reference(Image.new("RGB", (900, 60)), 64 * 64, 16)
    assert wide.size[0] / wide.size[1] <= 8 and min(wide.size) >= 64
    refs = [
        ReferenceSpec(role="product", key=_drawn(klein_engine.blobs, (200, 0, 0), (900, 60))),
        ReferenceSpec(role="product", key=_drawn(klein_engine.blobs, (0, 0, 200), (20, 20))),
    ]
    assert klein_engine.run(_spec(klein_engine, JobKind.GENERATE, refs, prompt="p")).image_keys


def test_persona_from_a_real_photo_embeds_its_face_without_rendering(any_engine) -> None:
    photo = any_engine.blobs.put((INSIGHTFACE_IMAGES / "Tom_Hanks_54745.png").read_bytes())
    renders = any_engine.stats["renders"]
    persona = PersonaSpec(archetype="photo", seed=0, photo_key=photo)
    result = any_engine.run(JobSpec(job_id="photo", kind=JobKind.CREATE_PERSONA, persona=persona))
    assert any_engine.stats["renders"] == renders
    assert result.reference_key == photo and result.image_keys == [photo] and result.lora_mix == []
    assert result.embedding is not None and len(result.embedding) == any_engine.embedder.dim
    group = any_engine.blobs.put((INSIGHTFACE_IMAGES / "t1.jpg").read_bytes())
    found = any_engine.run(
        JobSpec(job_id="group", kind=JobKind.CREATE_PERSONA, persona=PersonaSpec(archetype="photo", photo_key=group))
    )
    assert found.embedding is not None and found.embedding != result.embedding


def test_persona_from_a_photo_without_a_face_is_refused(engine) -> None:
    photo = _drawn(engine.blobs, (120, 120, 30), (200, 200))
    with pytest.raises(PhotoHasNoFace, match="no face found in the photo"):
        engine.run(
            JobSpec(
                job_id="noface", kind=JobKind.CREATE_PERSONA, persona=PersonaSpec(archetype="photo", photo_key=photo)
            )
        )


def test_a_photo_persona_conditions_its_posts_on_the_photo(any_engine) -> None:
    photo = any_engine.blobs.put((INSIGHTFACE_IMAGES / "Tom_Hanks_54745.png").read_bytes())
    other = any_engine.blobs.put((INSIGHTFACE_IMAGES / "t1.jpg").read_bytes())
    keys = [
        any_engine.run(
            _spec(
                any_engine,
                JobKind.GENERATE,
                [],
                prompt="at the beach",
                persona=PersonaSpec(archetype="photo", photo_key=key),
            )
        ).image_keys[0]
        for key in (photo, other)
    ]
    assert not np.array_equal(_pixels(any_engine, keys[0]), _pixels(any_engine, keys[1]))


def test_tiny_klein_loras_are_its_own_library(klein_engine, engine) -> None:
    assert klein_engine.library.root.name == "klein" and engine.library.root.name == "loras"
    assert klein_engine.archetypes() == engine.archetypes()
    persona = _persona(klein_engine)
    with_mix = klein_engine.run(_spec(klein_engine, JobKind.GENERATE, [], prompt="p", persona=persona))
    plain = klein_engine.run(
        _spec(klein_engine, JobKind.GENERATE, [], prompt="p", persona=persona.model_copy(update={"lora_mix": []}))
    )
    assert with_mix.lora_mix == persona.lora_mix
    assert (
        np.abs(_pixels(klein_engine, with_mix.image_keys[0]) - _pixels(klein_engine, plain.image_keys[0])).mean() > 0.5
    )
