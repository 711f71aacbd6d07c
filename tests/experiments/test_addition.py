"""MNIST addition: the model table and an end-to-end quick run through the training engine on a tiny MNIST."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

from stn.engine.checkpoint import CheckpointError
from stn.experiments import addition
from stn.models import list_models


def test_every_table_row_has_a_registered_model_and_the_papers_number() -> None:
    assert len(addition.MODELS) == 8
    assert {name for _, name in addition.MODELS.values()} <= set(list_models("add-*"))
    assert {row for row, _ in addition.MODELS.values()} == set(addition.PAPER)
    assert addition.PAPER["2xST-FCN TPS"] == 5.8 and addition.PAPER["FCN"] == 47.7


def _args(tiny_mnist: Path, tmp_path: Path, *models: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    addition.add_arguments(parser)
    return parser.parse_args(
        [
            "--data-dir",
            str(tiny_mnist),
            "--out",
            str(tmp_path / "out"),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--iterations",
            "2",
            "--batch-size",
            "8",
            "--num-train",
            "16",
            "--num-test",
            "8",
            "--lr",
            "0.05",
            "--device",
            "cpu",
            "--validation",
            "24",
            "--models",
            *models,
        ]
    )


def test_quick_run_end_to_end_writes_table_results_and_figures(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert addition.run(_args(tiny_mnist, tmp_path, "fcn", "2xst-fcn-aff")) == 0
    out = tmp_path / "out"
    record = json.loads((out / "results.json").read_text())
    assert set(record["results"]) == {"FCN", "2xST-FCN Aff"}
    result = record["results"]["2xST-FCN Aff"]
    (run,) = result["runs"]
    assert run["steps"] == 2 and 0 <= result["test_error"] <= 1 and result["paper_error"] == 9.0
    assert result["seeds"] == [0] and result["shipped_seed"] == 0 and result["test_error_sd"] is None
    assert run["val_samples"] == 24 and 0 <= run["val_error"] <= 1  # held out, scored every epoch
    table = (out / "addition.md").read_text()
    assert "| 2xST-FCN Aff | add-2xst-fcn-aff |" in table and "| 47.7 |" in table
    assert "the last 24 training digits held out as validation" in table
    assert (out / "transformers-2xst-fcn-aff.png").stat().st_size > 1000  # inputs and the 4 output channels
    assert not (out / "transformers-fcn.png").exists()  # no transformer to draw
    assert (tmp_path / "runs" / "fcn" / "seed0" / "checkpoint.pt").is_file()
    assert json.loads((tmp_path / "runs" / "fcn" / "seed0" / "config.json").read_text())["config"]["lr"] == 0.05
    assert record["lr"] == 0.05 and "learning rate 0.05" in table
    capsys.readouterr()
    assert addition.run(_args(tiny_mnist, tmp_path, "fcn")) == 0  # finished runs are skipped
    assert "FCN seed 0: finished before, skipped" in capsys.readouterr().out
    assert "2xST-FCN" not in (out / "addition.md").read_text()


def test_standardize_is_recorded_and_a_finished_plain_run_is_not_taken_for_it(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert addition.run(_args(tiny_mnist, tmp_path, "st-fcn-aff")) == 0
    capsys.readouterr()
    with pytest.raises(CheckpointError, match="standardize"):  # the same folders: not skipped, and not resumed
        addition.run(_args(tiny_mnist, tmp_path, "st-fcn-aff", "--standardize"))
    assert addition.run(_args(tiny_mnist, tmp_path / "std", "st-fcn-aff", "--standardize")) == 0
    record = json.loads((tmp_path / "std" / "out" / "results.json").read_text())
    assert record["standardize"] is True and "standardised" in (tmp_path / "std" / "out" / "addition.md").read_text()
    saved = json.loads((tmp_path / "std" / "runs" / "st-fcn-aff" / "seed0" / "config.json").read_text())
    assert saved["model"]["kwargs"]["standardize"] is True


def test_seeds_give_mean_and_sd_and_the_seed_with_the_lowest_validation_error_ships(
    tiny_mnist: Path, tmp_path: Path
) -> None:
    assert addition.run(_args(tiny_mnist, tmp_path, "st-fcn-aff", "--seeds", "2", "--seed", "3")) == 0
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    result = record["results"]["ST-FCN Aff"]
    runs = result["runs"]
    assert result["seeds"] == [3, 4] == [r["seed"] for r in runs] and record["seeds"] == [3, 4]
    errors = [100 * r["test_error"] for r in runs]
    assert result["test_error"] == pytest.approx(statistics.mean(errors) / 100)
    assert result["test_error_sd"] == pytest.approx(statistics.stdev(errors) / 100)
    assert result["shipped_seed"] == min(runs, key=lambda r: (r["val_error"], r["seed"]))["seed"]
    for seed in (3, 4):  # every seed trains in its own folder, on the same validation digits
        summary = json.loads((tmp_path / "runs" / "st-fcn-aff" / f"seed{seed}" / "summary.json").read_text())
        assert summary["seed"] == seed and summary["data"]["validation"] == 24
    table = (tmp_path / "out" / "addition.md").read_text()
    assert f"| {statistics.mean(errors):.1f} ± {statistics.stdev(errors):.1f} |" in table
    assert " / ".join(f"{100 * r['val_error']:.1f}" for r in runs) in table


def test_the_other_processes_of_a_data_parallel_run_train_every_model_and_seed(
    tiny_mnist: Path, tmp_path: Path, as_a_non_main_process: Callable
) -> None:
    trained = as_a_non_main_process(addition)
    assert addition.run(_args(tiny_mnist, tmp_path, "fcn", "st-fcn-aff", "--seeds", "2")) == 0
    assert trained == ["FCN seed 0", "FCN seed 1", "ST-FCN Aff seed 0", "ST-FCN Aff seed 1"]
    assert not (tmp_path / "out").exists()  # the main process writes the results
