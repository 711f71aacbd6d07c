"""studies/: the analysis scripts run (smoke mode) and keep the claims they print."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

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


def test_recipe_ablation_runs_every_arm_and_tabulates_mean_and_sd(tiny_mnist: Path, tmp_path: Path) -> None:
    study = _load("recipe_ablation")
    tiny = [
        "--",
        "--num-train",
        "32",
        "--num-test",
        "16",
        "--iterations",
        "2",
        "--batch-size",
        "16",
        "--validation",
        "16",
    ]
    out = tmp_path / "ablation"
    assert study.main(["--data-dir", str(tiny_mnist), "--out", str(out), "--seeds", "2", *tiny]) == 0
    results = json.loads((out / "results.json").read_text())
    assert sorted((r["arm"], r["seed"]) for r in results) == sorted(
        (arm, seed) for arm in study.ARMS for seed in (0, 1)
    )
    # each arm really trained with its recipe: the run's config records it
    config = json.loads((out / "cosine-nesterov" / "rts" / "st-cnn-aff" / "seed1" / "config.json").read_text())
    assert (config["config"]["schedule"], config["config"]["nesterov"], config["config"]["warmup"]) == (
        "cosine",
        True,
        0.05,
    )
    table = (out / "ablation.md").read_text()
    for arm in study.ARMS:
        errors = [100 * r["test_error"] for r in results if r["arm"] == arm]
        mean = sum(errors) / 2
        assert f"| {arm} |" in table and f"{mean:.2f} ±" in table
    means = {arm: sum(r["val_error"] for r in results if r["arm"] == arm) / 2 for arm in study.ARMS}
    best = min(means, key=lambda a: (means[a], list(study.ARMS).index(a)))
    assert f"Chosen on validation: **{best}**" in table


def test_p_floor_smoke_the_shipped_p_models_err_mostly_on_the_damaged_digits(shared_data: Path, tmp_path: Path) -> None:
    study = _load("p_floor")
    out = tmp_path / "p-floor"
    assert study.main(["--data-dir", str(shared_data / "mnist"), "--out", str(out), "--num-test", "1000"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["num_test"] == 1000 and 0.7 < results["clean_share"] < 0.95
    assert results["models"]  # every shipped P model is scored
    for scores in results["models"].values():
        assert scores["clean"] < scores["error"] < scores["rest"]
    assert (out / "least_ink.png").stat().st_size > 0
    assert "| horizon crosses the frame |" in (out / "p_floor.md").read_text()


def test_p_floor_ink_kept_is_one_for_the_identity_and_falls_as_the_digit_leaves_the_frame() -> None:
    study = _load("p_floor")
    digit = torch.zeros(1, 28, 28)
    digit[0, 10:18, 12:16] = 1.0
    identity = torch.tensor([[1.0, 0, 0, 0, 1, 0, 0, 0]])
    half_out = torch.tensor([[1.0, 0, 1.0, 0, 1, 0, 0, 0]])  # the output reads 1 to the right: the digit moves left
    kept, horizon = study.ink_kept(digit.expand(2, -1, -1), torch.cat([identity, half_out]))
    assert kept[0] == pytest.approx(1.0, abs=1e-4) and not horizon.any()
    assert 0.3 < kept[1] < 0.7  # its columns -0.11..0.11 land at -1.11..-0.89: about half of them in the frame
