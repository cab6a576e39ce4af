"""bench/engine.py: the tiny run reports its figures; the full-size architecture is the real one."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "engine.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_engine", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_benchmark_reports_seconds_and_memory_as_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    report = _bench_module().main(["--images", "2", "--warmup", "1", "--edit", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    assert report["model"] == "tiny" and report["device"] == "cpu"
    for part in ("text_to_image", "edit"):
        figures = report[part]
        assert figures["output_size"] == [64, 64] and figures["images"] == 2
        assert 0 < figures["seconds_per_step"] < figures["seconds_per_image"]  # (speed: bench/, not tests)
    assert report["memory"]["peak_rss_mib"] > 0


def test_full_size_architecture_is_flux_kontext_dev_sized() -> None:
    lp = _bench_module().build_full_random(torch.device("meta"), torch.bfloat16)  # shapes only, no memory
    transformer = lp.pipe.transformer
    assert transformer.config.guidance_embeds is True
    assert 11.8e9 < sum(p.numel() for p in transformer.parameters()) < 12.0e9  # FLUX.1 [dev]: 11.9B
    assert lp.multiple_of == 16 and lp.max_sequence_length == 512


def test_full_size_klein_is_flux2_klein_4b_sized() -> None:
    lp = _bench_module().build_full_klein_random(torch.device("meta"), torch.bfloat16)
    transformer = lp.pipe.transformer
    assert lp.family.name == "klein" and transformer.config.guidance_embeds is False
    assert 3.7e9 < sum(p.numel() for p in transformer.parameters()) < 4.1e9  # klein 4B's transformer: 3.9B
    assert transformer.config.joint_attention_dim == 3 * lp.pipe.text_encoder.config.hidden_size


def test_compare_runs_both_tiny_families_with_references() -> None:
    report = _bench_module().main(["--compare", "--images", "1", "--warmup", "0"])
    rows = report["compare"]
    assert [(r["family"], r["references"]) for r in rows] == [(f, n) for f in ("kontext", "klein") for n in (1, 2, 3)]
    assert all(r["edit_s"] > 0 and r["generate_s"] > 0 for r in rows)
