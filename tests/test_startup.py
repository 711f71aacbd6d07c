"""Start-up stays light: ``import stn`` and ``stn --help`` import nothing they do not need (no torch._dynamo,
plotting, scipy, progress bars, or the data, model, engine and experiment packages). Timings are
``benchmarks/bench_startup.py``'s job; this checks the imports, which is what the timings follow from."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch._dynamo", "matplotlib", "scipy", "tqdm", "stn.data", "stn.models", "stn.engine", "stn.experiments")


def new_modules(code: str) -> set[str]:
    """Modules that ``code`` imports in a fresh interpreter after ``import torch`` (torch's own are not ours)."""
    script = (
        f"import sys, json, torch\nbefore = set(sys.modules)\n{code}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(f"{h}.") for h in HEAVY))


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("import stn", id="import stn"),
        pytest.param("import stn\nstn.SpatialTransformer, stn.warp, stn.transforms.get('affine')", id="core API"),
        pytest.param("from stn.cli import build_parser\nbuild_parser([]).format_help()", id="stn --help"),
    ],
)
def test_no_heavy_imports(code: str) -> None:
    assert heavy(new_modules(code)) == []


def test_import_stn_imports_nothing_until_used() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, stn; print(sorted(m for m in sys.modules if m.startswith(('stn', 'torch'))))",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.stdout.strip() == "['stn']", done.stdout + done.stderr


def test_the_check_sees_heavy_imports() -> None:
    # The same check on a command that does need the data package finds it (so an empty list above means something).
    assert "stn.data" in heavy(new_modules("from stn.cli import build_parser\nbuild_parser(['data'])"))
