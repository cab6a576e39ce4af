"""README's main job: `persona-studio demo` runs the whole loop offline, on both engine families."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny", "tiny-klein"])
def test_the_demo_runs_the_whole_loop(tmp_path: Path, model: str) -> None:
    cli = Path(sys.executable).with_name("persona-studio")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    result = subprocess.run(
        [str(cli), "demo", "--model", model, "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "⚠️" not in result.stdout, result.stdout  # no command of the demo was refused
    manifest = json.loads((out / "manifest.json").read_text())
    kinds = [turn["kind"] for turn in manifest["turns"]]
    assert kinds == ["generate", "edit", "edit", "regenerate"]
    assert all(turn["status"] == "done" for turn in manifest["turns"])
    roles = {(ref["role"], ref["name"]) for ref in manifest["turns"][0]["references"]}
    assert roles == {("product", "mug"), ("scene", None)}
    assert [turn["approved"] for turn in manifest["turns"]] == [False, False, False, True]
    with zipfile.ZipFile(out / "export.zip") as archive:
        assert "manifest.json" in archive.namelist()
        assert sum(name.startswith("images/") for name in archive.namelist()) == 2
    assert (out / "contact-sheet.png").stat().st_size > 0
