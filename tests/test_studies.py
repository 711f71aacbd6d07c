"""studies/: the analysis scripts run (smoke mode) and keep the claims they print."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "studies" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fcn_study_smoke_our_fcn_trains_exactly_like_a_from_scratch_mlp(shared_data: Path, tmp_path: Path) -> None:
    study = _load("fcn_study")
    assert study.main(["--data-dir", str(shared_data / "mnist"), "--out", str(tmp_path), "--smoke"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    same = {r["variant"]: r["fcn_equals_plain_mlp"] for r in results if "fcn_equals_plain_mlp" in r}
    assert same == {"r": True, "rts": True}
    errors = {(r["variant"], r["arm"]): r["test_error"] for r in results if "arm" in r}
    assert errors[("rts", "fcn")] == errors[("rts", "plain-mlp")]
    assert "Command: `python studies/fcn_study.py" in (tmp_path / "fcn_study.md").read_text()
