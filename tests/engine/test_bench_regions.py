"""bench/regions.py on the tiny models: both families report a masked and a full edit, the masked
one kept every pixel outside its mask, and SAM computed one embedding for all the clicks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "regions.py"
pytestmark = pytest.mark.slow


def test_tiny_region_bench_reports_both_families_and_cached_clicks(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_regions", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "regions.json"
    report = module.main(["--size", "96", "--repeats", "1", "--warmup", "0", "--sam", "tiny", "--out", str(out)])
    assert out.read_text().strip().startswith("{")
    assert [f["family"] for f in report["families"]] == ["kontext", "klein"]
    for figures in report["families"]:
        assert figures["outside_mask_identical"] is True
        assert figures["masked_edit_s"] > 0 and figures["full_edit_s"] > 0
    assert report["sam"]["embeddings_computed"] == 1  # one image, four clicks
