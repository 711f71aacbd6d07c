"""``stn reproduce``: the experiment registry and Table 1 (a tiny grid)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stn import experiments
from stn.cli import main


def test_registry_lists_and_loads_experiments() -> None:
    assert {"table1", "table2"} <= set(experiments.names())
    module = experiments.load("table1")
    assert callable(module.add_arguments) and callable(module.run)
    with pytest.raises(KeyError, match="table1"):
        experiments.load("table9")


def test_an_experiment_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["reproduce"])
    assert "table1" in capsys.readouterr().err


def test_table1_grid_writes_the_table_and_skips_finished_runs(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "reproduce",
        "table1",
        "--data",
        "R",
        "--models",
        "st-cnn-aff,cnn",
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
        str(tmp_path),
        "--validation",
        "16",
        "--quiet",
    ]
    assert main(args) == 0
    table = (tmp_path / "table1.md").read_text()
    main_table = table.split("## Runs")[0]
    rows = {line.split(" | ")[0].strip("| "): line for line in main_table.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"CNN", "ST-CNN Aff", "FCN", "Model"}
    assert "| 1.2 |" in rows["CNN"] and "| 0.7 |" in rows["ST-CNN Aff"]  # the paper's R column
    assert rows["FCN"].endswith("| 2.1 | — |")  # not run
    assert "(r/st-cnn-aff/seed0/transformations.png)" in table  # links to the runs' figures
    assert (tmp_path / "table1.csv").read_text().count("\n") == 3  # header + 2 runs
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.count("finished before, skipped") == 2


def test_table1_seed_starts_the_seed_range_and_the_table_gathers_every_seed(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["reproduce", "table1", "--data", "R", "--models", "st-cnn-aff", "--iterations", "2", "--batch-size", "16"]
    base += [
        "--num-train",
        "32",
        "--num-test",
        "16",
        "--data-dir",
        str(tiny_mnist),
        "--out",
        str(tmp_path),
        "--validation",
        "16",
        "--quiet",
    ]
    assert main([*base, "--seed", "1"]) == 0
    assert [p.name for p in (tmp_path / "r" / "st-cnn-aff").iterdir()] == ["seed1"]
    table = (tmp_path / "table1.md").read_text()
    (only,) = _commands(table).values()
    assert only.startswith("stn reproduce table1 --data R --models st-cnn-aff") and "--seed 1" in only
    assert main([*base, "--weight-decay", "1e-4"]) == 0  # seed 0 beside it, with another recipe
    table = (tmp_path / "table1.md").read_text()
    commands = _commands(table)  # both: the folder gathers runs of two commands
    assert "--weight-decay 0.0001" in commands[1] and "--seed" not in commands[1]
    assert "--seed 1" in commands[2] and "--weight-decay" not in commands[2]
    errors = [
        100 * json.loads((tmp_path / "r" / "st-cnn-aff" / f"seed{k}" / "summary.json").read_text())["test_error"]
        for k in (0, 1)
    ]
    cell = f"{sum(errors) / 2:.2f} ± "
    assert cell in table.split("## Runs")[0]  # one cell, both seeds
    runs = [line for line in table.split("## Runs")[1].splitlines() if line.startswith("| ST-CNN")]
    assert [line.split(" | ")[2] for line in runs] == ["0", "1"]  # the seed column, in order
    assert [line.split(" | ")[-1].strip(" |") for line in runs] == ["1", "2"]  # each run's own command
    summaries = [json.loads((tmp_path / "r" / "st-cnn-aff" / f"seed{k}" / "summary.json").read_text()) for k in (0, 1)]
    assert [s["command"] for s in summaries] == [commands[1], commands[2]]


def _commands(table: str) -> dict[int, str]:
    """The numbered commands listed at the top of a table1.md."""
    head = table.split("## Runs")[0]
    return {int(line.split(".")[0]): line.split("`")[1] for line in head.splitlines() if line[:1].isdigit()}


def test_table1_runs_trained_before_commands_were_kept_are_marked(tiny_mnist: Path, tmp_path: Path) -> None:
    from stn.experiments.table1 import write_table

    args = ["reproduce", "table1", "--data", "R", "--models", "fcn", "--iterations", "1", "--batch-size", "8",
            "--num-train", "8", "--num-test", "8", "--data-dir", str(tiny_mnist), "--out", str(tmp_path),
            "--validation", "16", "--quiet"]  # fmt: skip
    assert main(args) == 0
    summary_path = tmp_path / "r" / "fcn" / "seed0" / "summary.json"
    summary = json.loads(summary_path.read_text())
    del summary["command"]  # as a summary.json written before runs kept their command
    summary_path.write_text(json.dumps(summary))
    table = write_table(tmp_path, ["r"]).read_text()
    assert _commands(table) == {}
    assert "Commands: not kept by these runs (trained before stn kept each run's command" in table
    (run,) = [line for line in table.split("## Runs")[1].splitlines() if line.startswith("| FCN")]
    assert run.endswith("| — |")
    assert main([*args[:5], "cnn", *args[6:]]) == 0  # a run that keeps its command beside the old one
    table = (tmp_path / "table1.md").read_text()
    (command,) = _commands(table).values()
    assert "--models cnn" in command
    assert "`—` in the `command` column (1 run): trained before stn kept each run's command" in table


def test_table1_trains_compositional_models_only_when_named_and_shows_them_beside_the_paper_s(
    tiny_mnist: Path, tmp_path: Path
) -> None:
    from stn.experiments.table1 import COMPOSITIONAL, MODELS, _model_list

    assert _model_list("all") == list(MODELS) and not set(COMPOSITIONAL) & set(_model_list("all"))
    args = ["reproduce", "table1", "--data", "R", "--models", "ic-st-cnn-aff", "--iterations", "1", "--batch-size",
            "8", "--num-train", "8", "--num-test", "8", "--data-dir", str(tiny_mnist), "--out", str(tmp_path),
            "--validation", "16", "--quiet"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((tmp_path / "r" / "ic-st-cnn-aff" / "seed0" / "summary.json").read_text())
    head = (tmp_path / "table1.md").read_text().split("## Runs")[0]
    rows = {line.split(" | ")[0].strip("| "): line for line in head.splitlines()}
    assert rows["IC-ST-CNN Aff"] == f"| IC-ST-CNN Aff | — | {100 * summary['test_error']:.2f} |"  # no paper cell
    assert "IC-ST-CNN Proj" not in rows  # rows of compositional models only where they ran


def test_table1_trains_st_fcn_localisation_nets_at_a_tenth_of_the_rate_unless_told(
    tiny_mnist: Path, tmp_path: Path
) -> None:
    base = ["reproduce", "table1", "--data", "R", "--iterations", "1", "--batch-size", "8", "--num-train", "8",
            "--num-test", "8", "--data-dir", str(tiny_mnist), "--validation", "16", "--quiet"]  # fmt: skip

    def scale(out: Path, model: str) -> float:
        config = json.loads((out / "r" / model / "seed0" / "config.json").read_text())
        return config["config"]["localization_lr_scale"]

    assert main([*base, "--models", "st-fcn-aff,st-cnn-aff", "--out", str(tmp_path / "default")]) == 0
    assert scale(tmp_path / "default", "st-fcn-aff") == 0.1 and scale(tmp_path / "default", "st-cnn-aff") == 1.0
    assert main([*base, "--models", "st-fcn-aff", "--loc-lr-scale", "1", "--out", str(tmp_path / "given")]) == 0
    assert scale(tmp_path / "given", "st-fcn-aff") == 1.0
    summary = json.loads((tmp_path / "given" / "r" / "st-fcn-aff" / "seed0" / "summary.json").read_text())
    assert " --loc-lr-scale 1.0 " in summary["command"]  # the option as typed, so that the command runs again


def test_table1_rejects_unknown_variants(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["reproduce", "table1", "--data", "R,XYZ"])
    assert "rts" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "lr"), [([], 0.03), (["--budget", "paper"], 0.01), (["--lr", "0.2"], 0.2)])
def test_table1_learning_rate_follows_the_budget_unless_given(
    tiny_mnist: Path, tmp_path: Path, extra: list[str], lr: float
) -> None:
    args = [
        "reproduce",
        "table1",
        "--data",
        "R",
        "--models",
        "fcn",
        "--iterations",
        "1",
        "--batch-size",
        "8",
        "--num-train",
        "8",
        "--num-test",
        "8",
        "--data-dir",
        str(tiny_mnist),
        "--out",
        str(tmp_path),
        "--validation",
        "16",
        "--quiet",
    ]
    assert main(args + extra) == 0
    config = json.loads((tmp_path / "r" / "fcn" / "seed0" / "config.json").read_text())
    assert config["config"]["lr"] == lr
    (command,) = _commands((tmp_path / "table1.md").read_text()).values()
    assert ("--lr" in command) == ("--lr" in extra)


def test_table1_epochs_given_replace_the_budgets_steps(tiny_mnist: Path, tmp_path: Path) -> None:
    # The long budget is counted in steps; --epochs 2 must train 2 epochs, not the budget's 14,063 steps.
    args = ["reproduce", "table1", "--data", "R", "--models", "fcn", "--budget", "long", "--epochs", "2",
            "--batch-size", "8", "--num-train", "16", "--num-test", "8", "--data-dir", str(tiny_mnist),
            "--out", str(tmp_path), "--validation", "16", "--quiet"]  # fmt: skip
    assert main(args) == 0
    run = tmp_path / "r" / "fcn" / "seed0"
    config = json.loads((run / "config.json").read_text())["config"]
    assert (config["epochs"], config["iterations"], config["schedule"]) == (2, None, "cosine")
    assert json.loads((run / "summary.json").read_text())["steps"] == 4


def test_table1_help_shows_each_budgets_own_learning_rate_and_steps(capsys: pytest.CaptureFixture[str]) -> None:
    from stn.experiments.table1 import BUDGETS

    with pytest.raises(SystemExit):
        main(["reproduce", "table1", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, budget in BUDGETS.items():
        assert f"{budget.iterations:,} steps of {budget.batch_size} at lr {budget.lr:g}" in text, name
    lrs = ", ".join(f"{name} {budget.lr:g}" for name, budget in BUDGETS.items())
    assert f"base learning rate (default: {lrs})" in text
    assert "replacing the budget's length (default none: --iterations sets the length)" in text
    assert BUDGETS["quick"].lr != BUDGETS["paper"].lr  # the help would hide nothing otherwise


@pytest.mark.parametrize("experiment", ["table1", "addition"])
def test_out_naming_an_existing_file_is_one_clear_line(
    experiment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", experiment, "--out", str(tmp_path / "file")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "is an existing file" in err and len(err.strip().splitlines()) == 1


def test_table1_holds_validation_digits_out_records_their_error_per_epoch_and_ships_the_best_seed(
    tiny_mnist: Path, tmp_path: Path
) -> None:
    args = ["reproduce", "table1", "--data", "R", "--models", "fcn", "--seeds", "2", "--epochs", "2",
            "--batch-size", "8", "--num-train", "16", "--num-test", "8", "--data-dir", str(tiny_mnist),
            "--out", str(tmp_path), "--validation", "24", "--quiet"]  # fmt: skip
    assert main(args) == 0
    summaries = [json.loads((tmp_path / "r" / "fcn" / f"seed{k}" / "summary.json").read_text()) for k in (0, 1)]
    for s in summaries:
        assert s["val_samples"] == 24 and s["data"]["validation"] == 24 and 0 <= s["val_error"] <= 1
        assert s["train_samples"] == 16  # drawn from the 72 digits left for training
    for k in (0, 1):
        metrics = (tmp_path / "r" / "fcn" / f"seed{k}" / "metrics.csv").read_text().splitlines()
        assert "val_error" in metrics[0].split(",") and len(metrics) == 3  # header + one row per epoch
    best = min(summaries, key=lambda s: (s["val_error"], s["seed"]))["seed"]
    table = (tmp_path / "table1.md").read_text()
    runs = [line for line in table.split("## Runs")[1].splitlines() if line.startswith("| FCN")]
    assert [("✓" in line) for line in runs] == [k == best for k in (0, 1)]
    assert "held the last 24 training digits out as validation" in table
    assert f"| {100 * summaries[0]['val_error']:.2f} |" in runs[0]
