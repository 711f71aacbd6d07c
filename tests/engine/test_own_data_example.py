"""examples/train_own_data.py (the "Train on your own data" example of docs/training.md) runs: a folder of images,
an ST-CNN from the registry trained by the engine, resumed, evaluated and visualised."""

from __future__ import annotations

import importlib.util
import json
import re
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


@pytest.mark.slow
def test_the_default_run_learns_its_task_and_moves_the_transformer(example, tmp_path: Path, capsys) -> None:
    """The example as a newcomer runs it (about 30 s): its own test error below 5 % and θ away from the identity
    (the step schedule it once had ended at 20.8 % with the transformer still at the identity)."""
    import torch

    from stn.engine import load_model

    out = tmp_path / "run"
    assert example.main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    error = float(re.search(r"after \d+ steps: test error ([\d.]+)%", printed).group(1))
    assert error < 5.0, printed
    model, _ = load_model(out)
    test_set = example.ImageFolder(tmp_path / "run-images", 32, "test")
    with torch.no_grad():
        theta = model.transformer.localize(torch.stack([test_set[i][0] for i in range(len(test_set))]))
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    assert (theta - identity).abs().amax(dim=1).mean() > 0.05  # a twentieth of the half-width, on average
