"""The 3-D experiment: an end-to-end quick run on a tiny MNIST through the training engine, resume equivalence
and ``stn eval`` on its checkpoint (its data: tests/data/test_volumes.py)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from stn.cli import main
from stn.data.specs import volume_spec
from stn.engine.checkpoint import load_checkpoint
from stn.engine.trainer import Trainer
from stn.experiments import volume3d
from stn.io import read_jsonl


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    volume3d.add_arguments(parser)
    return parser.parse_args(argv)


def tiny_args(data: Path, tmp_path: Path, name: str, *extra: str) -> list[str]:
    """4 steps of 4 volumes on the first 8 digits (2 steps an epoch), 6 test volumes."""
    return ["--data-dir", str(data), "--out", str(tmp_path / name), "--runs-dir", str(tmp_path / f"runs-{name}"),
            "--iterations", "4", "--batch-size", "4", "--num-train", "8", "--num-test", "6", "--device", "cpu",
            "--validation", "24", "--quiet", *extra]  # fmt: skip


def test_quick_run_end_to_end_writes_table_results_and_figure(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert volume3d.run(parse(*tiny_args(tiny_mnist, tmp_path, "3d"))) == 0
    out = tmp_path / "3d"
    record = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in record["results"]] == ["volume-cnn", "volume-st"]
    assert all(0 <= r["test_error"] <= 100 and r["train_seconds"] > 0 for r in record["results"])
    assert record["iterations"] == 4 and record["test_digits"] == 6 and record["train_digits"] == 8
    for r in record["results"]:
        summary = json.loads((tmp_path / "runs-3d" / r["name"] / "seed0" / "summary.json").read_text())
        assert r["test_error"] == 100 * summary["test_error"] and summary["steps"] == 4
        assert summary["val_samples"] == 24 and r["val_errors"] == [100 * summary["val_error"]]
        assert r["seeds"] == [0] and r["shipped_seed"] == 0
    last = read_jsonl(tmp_path / "runs-3d" / "volume-st" / "seed0" / "metrics.jsonl")[-1]
    assert "transformer.0.scale_mean" in last and "val_error" in last
    table = (out / "3d.md").read_text()
    assert "volume-st" in table and "projections.png" in table
    assert (out / "projections.png").stat().st_size > 1000

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(volume3d, "make_trainer", fail)
    assert volume3d.run(parse(*tiny_args(tiny_mnist, tmp_path, "3d"))) == 0
    assert json.loads((out / "results.json").read_text())["results"] == record["results"]


def test_interrupted_run_resumes_to_the_same_weights_and_eval_reproduces_it(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """volume-st: 4 steps straight == 3 steps, SIGTERM, resume, 1 step (in its second epoch); then ``stn eval``."""
    assert volume3d.run(parse(*tiny_args(tiny_mnist, tmp_path, "straight"))) == 0
    original = Trainer.train_step

    def step_then_signal(self: Trainer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = original(self, x, y)
        if self.model_spec["name"] == "volume-st" and self.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    assert volume3d.run(parse(*tiny_args(tiny_mnist, tmp_path, "resumed"))) == 128 + signal.SIGTERM
    assert load_checkpoint(tmp_path / "runs-resumed" / "volume-st" / "seed0")["step"] == 3
    monkeypatch.undo()
    assert volume3d.run(parse(*tiny_args(tiny_mnist, tmp_path, "resumed"))) == 0

    for name in volume3d.MODELS.values():
        a, b = (load_checkpoint(tmp_path / runs / name / "seed0") for runs in ("runs-straight", "runs-resumed"))
        assert a["step"] == b["step"] == 4
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (name, key)
        records = [
            read_jsonl(tmp_path / r / name / "seed0" / "metrics.jsonl") for r in ("runs-straight", "runs-resumed")
        ]
        keys = ("epoch", "step", "lr", "train_loss", "train_error", "test_loss", "test_error")
        assert [[r[k] for k in keys] for r in records[0]] == [[r[k] for k in keys] for r in records[1]]
    results = [json.loads((tmp_path / d / "results.json").read_text())["results"] for d in ("straight", "resumed")]
    assert [r["test_error"] for r in results[0]] == [r["test_error"] for r in results[1]]

    capsys.readouterr()
    assert main(["eval", str(tmp_path / "runs-resumed" / "volume-st" / "seed0"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    summary = json.loads((tmp_path / "runs-resumed" / "volume-st" / "seed0" / "summary.json").read_text())
    assert scored["model"] == "volume-st" and scored["test_samples"] == 6
    assert scored["test_error"] == summary["test_error"] and scored["test_loss"] == summary["test_loss"]


def test_the_spec_keeps_the_mnist_folder_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # stn eval may run from another folder than the training
    assert volume_spec(root="mnist")["root"] == str(tmp_path.resolve() / "mnist")
    assert volume_spec()["root"] is None  # the default search


def test_seeds_train_apart_on_the_same_validation_digits_and_the_table_gives_mean_and_sd(
    tiny_mnist: Path, tmp_path: Path
) -> None:
    assert volume3d.run(parse(*tiny_args(tiny_mnist, tmp_path, "3d", "--seeds", "2"))) == 0
    record = json.loads((tmp_path / "3d" / "results.json").read_text())
    assert record["seeds"] == [0, 1] and record["validation"] == 24 and record["num_val"] == 500
    table = (tmp_path / "3d" / "3d.md").read_text()
    for r in record["results"]:
        summaries = [
            json.loads((tmp_path / "runs-3d" / r["name"] / f"seed{k}" / "summary.json").read_text()) for k in (0, 1)
        ]
        assert [s["seed"] for s in summaries] == r["seeds"] == [0, 1]
        assert r["test_errors"] == [100 * s["test_error"] for s in summaries]
        assert r["test_error"] == pytest.approx(statistics.mean(r["test_errors"]))
        assert r["test_error_sd"] == pytest.approx(statistics.stdev(r["test_errors"]))
        assert r["shipped_seed"] == min(summaries, key=lambda s: (s["val_error"], s["seed"]))["seed"]
        assert summaries[0]["data"]["validation"] == summaries[1]["data"]["validation"] == 24
        assert summaries[0]["val_samples"] == 24  # the quick budget scores at most 500 of them
        assert f"| {statistics.mean(r['test_errors']):.2f} ± {statistics.stdev(r['test_errors']):.2f} |" in table


@pytest.mark.parametrize(
    ("flag", "value"), [("--max-angle", "nan"), ("--max-angle", "-5"), ("--max-translation", "inf"), ("--seeds", "0")]
)
def test_bad_pose_ranges_and_seed_counts_are_one_clear_line(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "3d", flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"argument {flag}: expected" in err and repr(value) in err


def test_the_other_processes_of_a_data_parallel_run_train_every_model_and_seed(
    tiny_mnist: Path, tmp_path: Path, as_a_non_main_process: Callable
) -> None:
    trained = as_a_non_main_process(volume3d)
    assert volume3d.run(parse(*tiny_args(tiny_mnist, tmp_path, "3d", "--seeds", "2"))) == 0
    assert trained == ["volume-cnn seed 0", "volume-cnn seed 1", "volume-st seed 0", "volume-st seed 1"]
    assert not (tmp_path / "3d").exists()  # the main process writes the results
