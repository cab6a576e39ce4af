"""Words and clicks -> masks through the tiny detector and SAM(-HQ); the image embedding cached."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.render.regions.masks import NothingFound, RegionError
from engine.render.regions.segmentation import Point, Segmenter
from engine.render.regions.tiny_segmentation import build_tiny_owlv2, build_tiny_sam


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=["sam_hq", "sam"])
def segmenter(request) -> Segmenter:
    if request.param == "sam_hq":
        return Segmenter("tiny", threshold=0.0)  # loaded on first need
    detector, detector_processor = build_tiny_owlv2()
    sam, sam_processor = build_tiny_sam(hq=False)
    return Segmenter.from_models(detector, detector_processor, sam, sam_processor, threshold=0.0)


def test_tiny_spec_loads_each_model_once_on_its_first_need(image) -> None:
    segmenter = Segmenter("tiny")
    assert segmenter._sam is None and segmenter._detector is None
    segmenter.mask_from_points(image, [Point(10, 10)])
    assert segmenter._detector is None  # clicks need SAM only (the web server loads no detector)
    sam = segmenter.sam
    assert segmenter.sam is sam and segmenter.hq
    assert type(segmenter.detector[0]).__name__ == "Owlv2ForObjectDetection"


def test_clicks_give_a_mask_and_the_embedding_is_computed_once_per_image(segmenter, image) -> None:
    before = segmenter.stats["embeddings"]
    first = segmenter.mask_from_points(image, [Point(30, 40)], key="img-a")
    second = segmenter.mask_from_points(image, [Point(30, 40), Point(90, 70, positive=False)], key="img-a")
    again = segmenter.mask_from_points(image, [Point(30, 40)], key="img-a")
    assert first.shape == (90, 120) and first.dtype == bool
    assert segmenter.stats["embeddings"] == before + 1
    assert np.array_equal(first, again)
    assert second.shape == first.shape


def test_cached_clicks_equal_the_processors_own_path(segmenter, image) -> None:
    """The point scaling done here matches SAM's processor with the image itself."""
    _, _, sam, processor = segmenter.models
    inputs = processor(
        images=image, input_points=[[[[30, 40], [90, 70]]]], input_labels=[[[1, 0]]], return_tensors="pt"
    )
    with torch.inference_mode():
        out = sam(**inputs, multimask_output=False)
    expected = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
    got = segmenter.mask_from_points(image, [Point(30, 40), Point(90, 70, positive=False)], key="img-b")
    assert np.array_equal(got, expected[0][0, 0].numpy().astype(bool))


def test_clicks_need_a_positive_point_inside_the_image(segmenter, image) -> None:
    with pytest.raises(RegionError, match="click at least once"):
        segmenter.mask_from_points(image, [Point(3, 4, positive=False)])
    with pytest.raises(RegionError, match="outside the 120x90 image"):
        segmenter.mask_from_points(image, [Point(500, 4)])


def test_words_give_a_mask_inside_the_detected_boxes(segmenter, image) -> None:
    boxes = segmenter.boxes(image, "top")
    assert 1 <= len(boxes) <= 4
    mask = segmenter.mask_from_words(image, "top", key="img-a")
    assert mask.any()
    allowed = np.zeros_like(mask)
    for x0, y0, x1, y1 in boxes:
        dx, dy = 0.05 * (x1 - x0) + 1, 0.05 * (y1 - y0) + 1
        allowed[max(0, int(y0 - dy)) : int(y1 + dy) + 1, max(0, int(x0 - dx)) : int(x1 + dx) + 1] = True
    assert not (mask & ~allowed).any()


def test_words_found_nowhere_name_the_words_and_the_image(image) -> None:
    strict = Segmenter("tiny", threshold=1.0)  # no score reaches 1.0
    with pytest.raises(NothingFound, match="no 'hat' found in image 2"):
        strict.mask_from_words(image, "hat", image_number=2)
    with pytest.raises(RegionError, match="say which region"):
        strict.mask_from_words(image, " , ")
