"""Face identity: the dlib backend on real photos, the similarity scale, the identity gate."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.render.identity import (
    NOTE_BELOW,
    NOTE_NO_FACE,
    NOTE_NO_REFERENCE,
    NOTE_OK,
    Face,
    identity_gate,
    load_embedder,
    similarity,
)
from storage.settings import DEFAULT_IDENTITY_THRESHOLDS
from tests.engine.conftest import INSIGHTFACE_IMAGES

THRESHOLD = DEFAULT_IDENTITY_THRESHOLDS["dlib"]


@pytest.fixture(scope="module")
def group_faces(dlib_embedder) -> tuple[Image.Image, list[Face]]:
    """t1.jpg (six people) and its faces, largest first."""
    photo = Image.open(INSIGHTFACE_IMAGES / "t1.jpg").convert("RGB")
    return photo, dlib_embedder.faces(photo)


def _around(photo: Image.Image, face: Face) -> Image.Image:
    """A loose crop: the face box grown by its size on every side."""
    left, top, right, bottom = face.box
    w, h = right - left, bottom - top
    return photo.crop((max(0, left - w), max(0, top - h), right + w, bottom + h))


def test_one_threshold_table_for_the_engine_and_the_settings() -> None:
    import engine.render.identity

    assert not hasattr(engine.render.identity, "DEFAULT_THRESHOLDS")  # no second copy
    assert DEFAULT_IDENTITY_THRESHOLDS == {"dlib": 0.55, "insightface": 0.35}


def test_dlib_finds_the_six_people_of_the_group_photo(group_faces) -> None:
    _, faces = group_faces
    assert len(faces) == 6
    assert all(face.embedding.shape == (128,) for face in faces)


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda im: im, id="crop"),
        pytest.param(lambda im: im.rotate(10, resample=Image.Resampling.BICUBIC, expand=True), id="rotate"),
        pytest.param(lambda im: im.resize((im.width * 2, im.height * 2), Image.Resampling.BICUBIC), id="upscale"),
        pytest.param(
            lambda im: im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.Resampling.LANCZOS), id="downscale"
        ),
    ],
)
def test_the_same_face_transformed_scores_above_the_threshold(dlib_embedder, group_faces, transform) -> None:
    photo, faces = group_faces
    scores = []
    for face in faces[:4]:
        image = transform(_around(photo, face))
        found = dlib_embedder.embed(image)
        assert found is not None
        scores.append(similarity(face.embedding, found, "dlib"))
    assert min(scores) > THRESHOLD, scores


def test_different_people_score_below_the_threshold(dlib_embedder, group_faces) -> None:
    _, faces = group_faces
    hanks = dlib_embedder.embed(Image.open(INSIGHTFACE_IMAGES / "Tom_Hanks_54745.png"))
    assert hanks is not None
    people = [face.embedding for face in faces] + [hanks]
    scores = [similarity(a, b, "dlib") for a, b in itertools.combinations(people, 2)]
    assert len(scores) == 21
    assert max(scores) < THRESHOLD, max(scores)


def test_no_face_in_a_plain_image(dlib_embedder) -> None:
    assert dlib_embedder.embed(Image.new("RGB", (200, 200), (128, 128, 128))) is None


def test_similarity_scale() -> None:
    a = np.zeros(128, dtype=np.float32)
    b = a.copy()
    b[0] = 0.6  # dlib's classic same-person distance
    assert similarity(a, a, "dlib") == 1.0
    assert similarity(a, b, "dlib") == pytest.approx(0.5)
    assert similarity(a, a + 5, "dlib") == 0.0
    u, v = np.eye(512, dtype=np.float32)[:2]
    assert similarity(u, u, "insightface") == pytest.approx(1.0)
    assert similarity(u, v, "insightface") == 0.0
    assert similarity(u, -u, "insightface") == 0.0
    with pytest.raises(ValueError, match="different sizes"):
        similarity(a, u, "dlib")
    with pytest.raises(ValueError, match="unknown face backend"):
        similarity(a, a, "opencv")


def test_missing_insightface_pack_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "buffalo_l"
    with pytest.raises(FileNotFoundError, match=r"insightface model pack not found in .*buffalo_l"):
        load_embedder("insightface", folder)
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="buffalo_l"):
        load_embedder("insightface", folder)
    with pytest.raises(FileNotFoundError, match="FACE_MODEL_DIR"):
        load_embedder("insightface", None)
    with pytest.raises(ValueError, match="unknown face backend"):
        load_embedder("opencv")


# -- the gate, with a scripted embedder -------------------------------------------------------


class ScriptedEmbedder:
    """Returns the queued embeddings one per call (``None`` = no face)."""

    backend = "dlib"
    dim = 3

    def __init__(self, script: list[np.ndarray | None]) -> None:
        self.script = list(script)
        self.calls = 0

    def faces(self, image: Image.Image) -> list[Face]:
        raise NotImplementedError

    def embed(self, image: Image.Image) -> np.ndarray | None:
        self.calls += 1
        return self.script.pop(0)


REFERENCE = np.zeros(3, dtype=np.float32)


def _at(distance: float) -> np.ndarray:
    """An embedding at ``distance`` from REFERENCE: similarity 1 - distance / 1.2."""
    return np.array([distance, 0, 0], dtype=np.float32)


def _renderer() -> tuple[list[int], object]:
    attempts: list[int] = []

    def render(attempt: int) -> tuple[Image.Image, int]:
        attempts.append(attempt)
        return Image.new("RGB", (8, 8), (attempt, 0, 0)), 100 + attempt

    return attempts, render


def test_gate_retries_and_returns_the_best_candidate() -> None:
    attempts, render = _renderer()
    embedder = ScriptedEmbedder([_at(0.9), _at(0.7), None, _at(1.0)])
    result = identity_gate(render, embedder, REFERENCE, threshold=0.55, max_tries=4)
    assert attempts == [0, 1, 2, 3]
    assert result.tries == 4
    assert result.best.seed == 101 and result.best.image.getpixel((0, 0)) == (1, 0, 0)
    assert result.best.note == NOTE_BELOW
    assert result.best.score == pytest.approx(1 - 0.7 / 1.2)


def test_gate_stops_at_the_first_candidate_that_passes() -> None:
    attempts, render = _renderer()
    embedder = ScriptedEmbedder([_at(0.9), _at(0.2), _at(0.0)])
    result = identity_gate(render, embedder, REFERENCE, threshold=0.55, max_tries=3)
    assert attempts == [0, 1]
    assert (result.tries, result.best.seed, result.best.note) == (2, 101, NOTE_OK)
    assert result.best.score == pytest.approx(1 - 0.2 / 1.2)


def test_gate_reports_no_face_apart_from_a_different_face() -> None:
    _, render = _renderer()
    no_face = identity_gate(render, ScriptedEmbedder([None, None]), REFERENCE, 0.55, max_tries=2)
    assert (no_face.best.note, no_face.best.score, no_face.tries, no_face.best.seed) == (NOTE_NO_FACE, None, 2, 100)
    _, render = _renderer()
    different = identity_gate(render, ScriptedEmbedder([None, _at(1.0)]), REFERENCE, 0.55, max_tries=2)
    assert different.best.note == NOTE_BELOW and different.best.seed == 101
    assert different.best.score == pytest.approx(1 - 1.0 / 1.2)


def test_gate_without_a_reference_face_renders_once() -> None:
    attempts, render = _renderer()
    embedder = ScriptedEmbedder([])
    result = identity_gate(render, embedder, None, 0.55, max_tries=3)
    assert attempts == [0] and embedder.calls == 0
    assert (result.tries, result.best.note, result.best.score) == (1, NOTE_NO_REFERENCE, None)
