"""``stn train``: a run from the command line, resuming by folder, and argument errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stn.cli import main


def test_a_run_writes_the_run_folder(trained_run: Path) -> None:
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["model"] == "st-fcn-aff" and summary["steps"] == 6
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"]["name"] == "st-fcn-aff" and config["model"]["kwargs"]["target_params"] == 40000
    assert config["data"]["variant"] == "r" and config["task"] == {"name": "classification", "num_classes": 10}
    assert config["config"]["batch_size"] == 16


def test_resume_with_only_the_folder_continues_the_saved_run(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "train",
        "--data",
        "r",
        "--model",
        "fcn",
        "--iterations",
        "2",
        "--batch-size",
        "16",
        "--num-train",
        "32",
        "--num-test",
        "16",
        "--data-dir",
        str(tiny_mnist),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
        "--no-figures",
    ]
    assert main(args) == 0
    assert "fcn on r" in capsys.readouterr().out
    assert main(args) == 1  # the folder holds a run: refuse to overwrite it
    assert "--resume" in capsys.readouterr().err
    assert (
        main(["train", "--out", str(tmp_path / "run"), "--resume", "--iterations", "4", "--quiet", "--no-figures"]) == 0
    )
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 4


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data", "rts", "--model", "st-cnn-affine"], "st-cnn-aff"),  # the valid names are listed
        (["--data", "mnist", "--model", "cnn"], "rts"),
        (["--data", "rts", "--model", "cnn", "--epochs", "0"], "positive integer"),
        (["--data", "rts", "--model", "cnn", "--lr", "nan"], "finite number > 0"),
        (["--data", "rts", "--model", "cnn", "--lr", "inf"], "finite number > 0"),
        (["--data", "rts", "--model", "cnn", "--lr", "0"], "finite number > 0"),
        (["--data", "rts", "--model", "cnn", "--momentum", "1"], "[0, 1)"),
        (["--data", "rts", "--model", "cnn", "--weight-decay", "-1"], ">= 0"),
        (["--data", "rts", "--model", "cnn", "--loc-lr-scale", "nan"], ">= 0"),
        (["--data", "rts", "--model", "cnn", "--clip-grad-norm", "0"], "> 0"),
    ],
)
def test_wrong_values_are_usage_errors(args: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err


def test_data_and_model_are_needed_for_a_new_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model", "cnn", "--out", str(tmp_path / "x")]) == 1
    assert "--data required" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "eval", "visualize", "export", "demo", "reproduce"])
def test_every_command_has_help_with_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_a_damaged_config_json_on_resume_names_the_file(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "config.json").write_text('{"config": {"lr": ')
    assert main(["train", "--out", str(run), "--resume", "--quiet", "--no-figures"]) != 0
    err = capsys.readouterr().err
    assert str(run / "config.json") in err and "damaged" in err and len(err.strip().splitlines()) == 1


def test_the_config_json_of_a_run_resumes_with_every_model_argument(trained_run: Path) -> None:
    from stn.engine.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(trained_run)  # a run folder is enough
    config = json.loads((trained_run / "config.json").read_text())
    assert checkpoint["model_kwargs"] == {k: tuple(v) if isinstance(v, list) else v
                                          for k, v in config["model"]["kwargs"].items()}  # fmt: skip


def test_sigterm_to_a_running_stn_train_saves_and_the_run_resumes(tiny_mnist: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from stn.engine.checkpoint import load_checkpoint

    out = tmp_path / "run"
    argv = ["train", "--data", "r", "--model", "fcn", "--target-params", "5000", "--iterations", "3000",
            "--batch-size", "8", "--num-train", "96", "--num-test", "16", "--data-dir", str(tiny_mnist),
            "--out", str(out), "--quiet", "--no-figures", "--device", "cpu"]  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "stn", *argv], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:  # the first epoch's
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        process.kill()
    stopped = load_checkpoint(out)["step"]
    assert 12 <= stopped < 3000 and not load_checkpoint(out)["finished"]
    assert main(["train", "--out", str(out), "--resume", "--iterations", str(stopped + 12), "--quiet"]) == 0
    assert load_checkpoint(out)["step"] == stopped + 12 and load_checkpoint(out)["finished"]


def test_standardize_reaches_the_model_and_is_kept_on_resume(tiny_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "std"
    base = ["train", "--out", str(out), "--data-dir", str(tiny_mnist), "--batch-size", "16", "--quiet"]
    first = [*base, "--data", "r", "--model", "st-fcn-aff", "--target-params", "40000", "--standardize"]
    assert main([*first, "--iterations", "3", "--no-figures"]) == 0
    kwargs = json.loads((out / "config.json").read_text())["model"]["kwargs"]
    assert kwargs["standardize"] is True
    assert main([*base, "--resume", "--iterations", "6", "--no-figures"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["kwargs"]["standardize"] is True
    assert config["config"]["localization_lr_scale"] == 0.1  # the ST-FCNs' default (stn.experiments.table1), kept
    assert json.loads((out / "summary.json").read_text())["steps"] == 6


def test_model_help_lists_only_the_models_stn_train_trains() -> None:
    from stn.cli import build_parser
    from stn.cli.train import trainable_models
    from stn.experiments.table1 import MODELS

    assert set(MODELS) <= set(trainable_models())
    assert not [m for m in trainable_models() if m.startswith(("svhn-", "cub-", "volume-", "coloc-"))]
    train = build_parser(["train"])._subparsers._group_actions[0].choices["train"]
    model_help = train._option_string_actions["--model"].help
    assert all(m in model_help for m in trainable_models())
    assert "svhn-cnn" not in model_help and "cub-cnn" not in model_help and "volume-st" not in model_help


@pytest.mark.parametrize(
    ("model", "command"),
    [
        ("svhn-st-cnn-multi", "stn reproduce table2"),
        ("cub-st-cnn-2x", "stn reproduce table3"),
        ("volume-st", "stn reproduce 3d"),
        ("coloc-st", "stn reproduce colocalization"),
    ],
)
def test_a_model_trained_by_an_experiment_is_one_line_naming_its_command(
    model: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "rts", "--model", model])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"stn train does not train {model!r}" in err and command in err


def test_a_typo_in_the_model_name_suggests_the_closest_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "rts", "--model", "st-cnn-af"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown model 'st-cnn-af'; did you mean 'st-cnn-aff'" in err
