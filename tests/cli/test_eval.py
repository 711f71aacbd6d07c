"""``stn eval``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stn.cli import main


def test_eval_reproduces_the_runs_test_error(
    trained_run: Path, tiny_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["eval", str(trained_run), "--data-dir", str(tiny_mnist), "--json"]) == 0  # a run folder
    result = json.loads(capsys.readouterr().out)
    summary = json.loads((trained_run / "summary.json").read_text())
    assert result["test_error"] == summary["test_error"] and result["test_loss"] == summary["test_loss"]  # exactly
    assert result["data"] == "r" and result["test_samples"] == 32


def test_eval_on_a_variant_of_another_size_is_refused(
    trained_run: Path, tiny_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(trained_run / "checkpoint.pt"), "--data", "rts", "--data-dir", str(tiny_mnist)]) == 1
    assert "(1, 28, 28)" in capsys.readouterr().err


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 100)
    assert main(["eval", str(tmp_path / "bad.pt")]) == 1
    assert "corrupt" in capsys.readouterr().err


def test_a_run_on_the_users_own_data_says_it_cannot_be_rebuilt(tmp_path: Path, capsys) -> None:
    import torch
    from torch.utils.data import TensorDataset

    from stn.engine import ClassificationTask, TrainConfig, Trainer
    from stn.models import create_model

    data = TensorDataset(torch.rand(16, 1, 12, 12), torch.randint(0, 2, (16,)))
    model = create_model("fcn", in_shape=(1, 12, 12), num_classes=2, target_params=2_000)
    config = TrainConfig(iterations=1, batch_size=8, device="cpu")
    Trainer(model, data, data, ClassificationTask(2), config, run_dir=tmp_path, progress=False).fit()
    capsys.readouterr()
    assert main(["eval", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "stn cannot rebuild it" in err and "stn.engine.evaluate" in err and len(err.strip().splitlines()) == 1


def test_num_test_above_the_test_set_is_refused_naming_its_size(
    trained_run: Path, tiny_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["eval", str(trained_run), "--data-dir", str(tiny_mnist), "--num-test", "33"]) == 1
    err = capsys.readouterr().err
    assert "--num-test 33 is above the 32 samples of this test set" in err and "give at most 32" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["eval", str(trained_run), "--data-dir", str(tiny_mnist), "--num-test", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_samples"] == 32


def test_num_test_on_data_that_takes_no_sample_count_is_refused_not_ignored() -> None:
    import argparse

    from stn.cli.eval import load_test_set

    args = argparse.Namespace(data=None, data_dir=None)
    with pytest.raises(ValueError, match=r"--num-test applies to distorted-MNIST and 3-D volume runs; .* cub"):
        load_test_set({"data": {"kind": "cub", "root": "nowhere", "image_size": 64}}, args, 10)
