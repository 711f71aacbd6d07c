"""``benchmarks/time_to_accuracy.py``: its smoke mode end to end, and the tutorial network it writes out."""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "time_to_accuracy.py"


def test_time_to_accuracy_smoke_writes_its_csv_curve_and_table(tiny_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "tta"
    argv = [sys.executable, str(SCRIPT), "--smoke", "--data-dir", str(tiny_mnist), "--out", str(out), "--threads", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"stn / tutorial: \d+\.\d+x", done.stdout), done.stdout[-2000:]  # a ratio, as every benchmark
    with (out / "time_to_accuracy.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["network"] for r in rows} == {"stn", "tutorial"}
    assert all(0 <= float(r["val_error"]) <= 100 and float(r["minutes"]) >= 0 for r in rows)
    table = (out / "time_to_accuracy.md").read_text()
    assert "time to 1.0% val error" in table and "time to 0.8% val error" in table
    assert "| stn st-cnn-aff" in table and "| PyTorch tutorial STN" in table
    with Image.open(out / "time_to_accuracy.png") as image:
        assert image.format == "PNG"


def test_a_bad_option_is_one_line_and_a_nonzero_exit() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--minutes", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--minutes" in done.stderr


def test_the_tutorial_network_keeps_the_tutorials_sizes_at_28x28_and_adapts_to_42x42(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = importlib.util.spec_from_file_location("time_to_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    net = module.TutorialNet(28)
    assert (net.loc_flat, net.flat) == (10 * 3 * 3, 320)  # the tutorial's view(-1, 10 * 3 * 3) and view(-1, 320)
    net = module.TutorialNet(42)
    assert (net.loc_flat, net.flat) == (10 * 7 * 7, 20 * 7 * 7)
    x = torch.rand(2, 1, 42, 42)
    assert torch.allclose(net.stn(x), x, atol=1e-5)  # fc_loc starts at the identity
    assert torch.allclose(net.eval()(x).exp().sum(1), torch.ones(2))  # log-probabilities
