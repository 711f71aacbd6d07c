"""``benchmarks/bench_startup.py`` runs in its smoke mode and prints a ratio for every command it times."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_startup.py"


def test_bench_startup_smoke() -> None:
    done = subprocess.run([sys.executable, str(BENCHMARK), "--smoke"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("import torch", "import stn", "stn --help", "stn train --help"):
        assert re.search(rf"^{re.escape(name)} +\d+\.\d+s +\d+\.\d+x", done.stdout, re.MULTILINE), done.stdout
