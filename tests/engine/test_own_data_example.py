"""examples/train_own_data.py (the "Train on your own data" example of docs/training.md) runs: a folder of images,
an ST-CNN from the registry trained by the engine, resumed, evaluated and visualised."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_own_data.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("train_own_data", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_then_resume_a_longer_run_then_find_it_done(example, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    folder = example.write_demo_folder(tmp_path / "images", per_class=40, size=24)
    args = ["--folder", str(folder), "--size", "24", "--out", str(out)]
    assert example.main([*args, "--epochs", "1"]) == 0
    first = capsys.readouterr().out
    assert "64 training / 16 test images of ['cross', 'square']" in first and ": new" in first
    assert example.main([*args, "--epochs", "2"]) == 0  # continues the same run
    second = capsys.readouterr().out
    assert ": resume" in second and "after 4 steps" in second
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and f"test error {100 * summary['test_error']:.1f}%" in second  # evaluated again
    assert (out / "what-the-transformer-does.png").stat().st_size > 1000
    assert example.main([*args, "--epochs", "2"]) == 0
    assert ": done" in capsys.readouterr().out
