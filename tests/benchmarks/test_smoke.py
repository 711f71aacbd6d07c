"""Each benchmark runs in its tiny smoke mode (CI checks that they work; speed is measured by hand, not here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# Lines a benchmark must print with a ratio, beyond its main table.
RATIO_LINES = {
    "bench_warp.py": [
        r"affine .* stn\.warp \(plain\)",  # antialias=True against plain sampling
        r"scale 1/2 .* F\.interpolate antialias",
        r"transform_points affine .* kornia transform_points",
        r"transform_points tps inverse .* kornia warp_points_tps",
        r"compose projective .* matrix product by hand",
    ]
}


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["bench_warp.py", "--smoke"], id="warp"),
        pytest.param(["bench_svhn.py", "--smoke"], id="svhn"),
        pytest.param(["bench_train.py", "--steps", "1", "--batch-size", "8"], id="train"),
        pytest.param(["bench_train.py", "--steps", "1", "--batch-size", "8", "--channels-last"], id="train-nhwc"),
        pytest.param(["bench_data.py", "--smoke", "--data-dir", "{tiny_mnist}"], id="data"),
        pytest.param(["profile_step.py", "--smoke"], id="profile-step"),
    ],
)
def test_benchmark_smoke(args: list[str], tiny_mnist: Path) -> None:
    argv = [a.format(tiny_mnist=tiny_mnist) for a in args]
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"\d\.\d+x", done.stdout), done.stdout[-2000:]  # every benchmark prints a ratio such as 1.04x
    for line in RATIO_LINES.get(argv[0], []):
        assert re.search(line + r".* \d+\.\d+x", done.stdout), f"no line {line!r} with a ratio in\n{done.stdout}"
