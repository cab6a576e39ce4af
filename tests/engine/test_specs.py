"""Render defaults follow the model's size, read from a pipeline folder without loading it."""

from __future__ import annotations

import json
from pathlib import Path

from engine.render.tiny_kontext import TINY_TRANSFORMER_CONFIG
from engine.specs import default_params, is_toy_model, size_limits


def _folder(tmp_path: Path, heads: int, head_dim: int) -> str:
    (tmp_path / "transformer").mkdir()
    config = {"num_attention_heads": heads, "attention_head_dim": head_dim, "num_layers": 19}
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def test_tiny_and_test_sized_folders_get_small_defaults(tmp_path: Path) -> None:
    assert is_toy_model("tiny")
    heads, head_dim = TINY_TRANSFORMER_CONFIG["num_attention_heads"], TINY_TRANSFORMER_CONFIG["attention_head_dim"]
    folder = _folder(tmp_path, int(heads), int(head_dim))  # type: ignore[call-overload]
    assert is_toy_model(folder)
    assert (default_params(folder).width, default_params(folder).steps) == (64, 4)
    assert size_limits(folder) == (32, 256)


def test_full_size_models_and_hub_ids_get_kontext_defaults(tmp_path: Path) -> None:
    full = _folder(tmp_path, 24, 128)  # FLUX.1: 24 heads × 128 = 3072
    for model in (full, "black-forest-labs/FLUX.1-Kontext-dev", str(tmp_path / "missing")):
        assert not is_toy_model(model)
        params = default_params(model)
        assert (params.width, params.height, params.steps, params.guidance) == (1024, 1024, 28, 2.5)
        assert size_limits(model) == (256, 2048)
