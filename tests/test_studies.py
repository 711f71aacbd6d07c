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


@pytest.fixture(scope="module")
def tiny_rts_grid(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a finished two-step ``stn reproduce table1`` grid: one ST-FCN Aff run on RTS (64 validation
    digits), the shape of each arm of ``results/stfcn-sweep``."""
    from stn.cli import main

    out = tmp_path_factory.mktemp("stfcn-sweep") / "tiny-arm"
    args = ["reproduce", "table1", "--data", "RTS", "--models", "st-fcn-aff", "--iterations", "2"]
    args += ["--batch-size", "16", "--num-train", "64", "--num-test", "32", "--validation", "64"]
    assert main([*args, "--data-dir", str(shared_data / "mnist"), "--out", str(out), "--quiet"]) == 0
    return out


THETA_KEYS = {
    "run",
    "val_error_recomputed",
    "translation_r2_x",
    "translation_r2_y",
    "centre_dist_px",
    "centre_dist_const_px",
    "scale_mean",
    "scale_std",
    "scale_vs_side_r",
    "ink_kept_mean",
    "ink_kept_lt_0.95",
    "loc_layers",
}


def test_theta_tracking_rescores_the_runs_own_holdout_and_reports_the_loc_nets_units(
    shared_data: Path, tiny_rts_grid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _load("theta_tracking")
    run = tiny_rts_grid / "rts" / "st-fcn-aff" / "seed0"
    out = tmp_path / "arm.analysis.json"
    assert study.main([str(run), "--data-dir", str(shared_data / "mnist"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.read_text() == printed  # --out holds exactly the printed JSON line
    result = json.loads(printed)
    assert set(result) == THETA_KEYS and result["run"] == str(run)
    # all 64 held-out digits of the run (its config's validation), so the trainer's val error comes back
    summary = json.loads((run / "summary.json").read_text())
    assert result["val_error_recomputed"] == round(100 * summary["val_error"], 2)

    assert study.main([str(run), "--data-dir", str(shared_data / "mnist"), "--num-val", "16"]) == 0
    few = json.loads(capsys.readouterr().out)
    for r in (result, few):
        assert set(r) == THETA_KEYS
        assert 0 <= r["val_error_recomputed"] <= 100
        assert 0 <= r["translation_r2_x"] <= 1 and 0 <= r["translation_r2_y"] <= 1
        assert -1 <= r["scale_vs_side_r"] <= 1
        assert r["scale_mean"] == pytest.approx(1.0, abs=0.05)  # two steps from the identity
        assert r["ink_kept_mean"] == pytest.approx(1.0, abs=0.05) and 0 <= r["ink_kept_lt_0.95"] <= 1
        assert r["centre_dist_px"] > 0 and r["centre_dist_const_px"] > 0
        assert [layer["units"] for layer in r["loc_layers"]] == [32, 32]  # the ST-FCN's two 32-unit ReLU layers
        for layer in r["loc_layers"]:
            assert layer["dead"] + layer["always_on"] <= layer["units"]
            assert 0 < layer["participation_ratio"] <= layer["units"]


def test_sweep_curves_draws_one_line_per_arm_and_prints_the_epoch_table(
    tiny_rts_grid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    study = _load("sweep_curves")
    run = tiny_rts_grid / "rts" / "st-fcn-aff" / "seed0"
    png = tmp_path / "figures" / "sweep.png"
    # an arm is a grid folder (labelled by its name) or a run folder
    assert study.main([str(tiny_rts_grid), str(run), "--out", str(png), "--every", "5"]) == 0
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1350, 360)  # 15 x 4 inches at 90 dpi
    printed = capsys.readouterr().out
    assert printed.startswith("tiny-arm\nepoch  lr ") and "\nseed0\nepoch  lr " in printed
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"{100 * row['val_error']:5.2f}  {100 * row['test_error']:5.2f}" in printed  # the last epoch is listed
    assert printed.endswith(f"wrote {png}\n")

    assert study.main([str(run), "--every", "1"]) == 0  # the table alone
    assert capsys.readouterr().out.startswith("seed0\nepoch  lr ")
    with pytest.raises(ValueError, match="found no run"):
        study.main([str(tmp_path), "--out", str(png)])
    with pytest.raises(SystemExit):  # neither a figure nor a table asked for
        study.main([str(run)])
