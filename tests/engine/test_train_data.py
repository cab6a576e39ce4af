"""The training-set filter on real photos (the insightface wheel's t1.jpg and Tom_Hanks_54745.png)
with the dlib embedder: the reference person's images are kept, everyone else is rejected with a reason."""

from __future__ import annotations

from PIL import Image, ImageOps

from engine.training.data import (
    REASON_DUPLICATE,
    REASON_NO_FACE,
    REASON_SCORE,
    candidate_prompts,
    caption,
    filter_candidates,
    trigger_word,
)
from storage.settings import DEFAULT_IDENTITY_THRESHOLDS
from tests.engine.conftest import INSIGHTFACE_IMAGES

THRESHOLD = DEFAULT_IDENTITY_THRESHOLDS["dlib"]


def _hanks_variants() -> list[Image.Image]:
    hanks = Image.open(INSIGHTFACE_IMAGES / "Tom_Hanks_54745.png").convert("RGB")
    big = hanks.resize((336, 336), Image.Resampling.BICUBIC)
    return [
        big.crop((20, 10, 320, 330)),  # a crop
        big.rotate(12, resample=Image.Resampling.BICUBIC, expand=True),  # rotated
        ImageOps.expand(big.rotate(-8, resample=Image.Resampling.BICUBIC), border=60, fill=(230, 225, 215)),
        ImageOps.mirror(big.crop((0, 0, 300, 336))),  # mirrored crop
    ]


def _others(dlib_embedder) -> list[Image.Image]:
    photo = Image.open(INSIGHTFACE_IMAGES / "t1.jpg").convert("RGB")
    out = []
    for face in dlib_embedder.faces(photo)[:4]:
        left, top, right, bottom = face.box
        w, h = right - left, bottom - top
        out.append(photo.crop((max(0, left - w), max(0, top - h), right + w, bottom + h)))
    return out


def test_filter_keeps_the_reference_person_and_rejects_others_with_reasons(dlib_embedder) -> None:
    reference = dlib_embedder.embed(Image.open(INSIGHTFACE_IMAGES / "Tom_Hanks_54745.png"))
    assert reference is not None
    hanks = _hanks_variants()
    others = _others(dlib_embedder)
    blank = Image.new("RGB", (256, 256), (128, 128, 128))
    # order: 4 Hanks variants, 4 other people, a faceless image, the first Hanks crop again
    images = [*hanks, *others, blank, hanks[0].copy()]
    report = filter_candidates(images, dlib_embedder, reference, THRESHOLD)

    assert report.identity_checked
    assert report.kept == [0, 1, 2, 3]
    by_index = {v.index: v for v in report.verdicts}
    for i in range(4, 8):
        assert by_index[i].reason == REASON_SCORE and by_index[i].score is not None
        assert by_index[i].score < THRESHOLD and "threshold" in by_index[i].detail
    assert by_index[8].reason == REASON_NO_FACE and by_index[8].score is None
    assert by_index[9].reason == REASON_DUPLICATE and "#1" in by_index[9].detail
    assert all(by_index[i].score >= THRESHOLD for i in range(4))
    summary = report.as_dict()
    assert summary["rejected_by_reason"] == {REASON_SCORE: 4, REASON_NO_FACE: 1, REASON_DUPLICATE: 1}


def test_without_a_reference_face_identity_is_not_checked_but_duplicates_still_go() -> None:
    a = Image.new("RGB", (64, 64), (200, 30, 30))
    b = Image.new("RGB", (64, 64), (30, 30, 200))
    report = filter_candidates([a, b, a.copy()], None, None, THRESHOLD)
    assert not report.identity_checked
    assert report.kept == [0, 1]
    assert report.rejected[0].reason == REASON_DUPLICATE


def test_candidate_prompts_vary_and_repeat_for_a_seed() -> None:
    prompts = candidate_prompts(8, seed=11)
    assert prompts == candidate_prompts(8, seed=11)
    assert len(set(prompts)) == 8
    assert caption(prompts[0], trigger_word(7)).startswith("pst7 person, ")
