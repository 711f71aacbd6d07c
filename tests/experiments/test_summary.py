"""``stn reproduce summary``: one row per Table 1 cell run, from a tiny synthetic results folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from stn.cli import main
from stn.experiments.summary import collect_cells


def _run(
    results: Path,
    folder: str,
    variant: str,
    model: str,
    seed: int,
    error: float,
    steps: int,
    *,
    table: bool = True,
    val_error: float | None = None,
    num_train: int | None = None,
) -> None:
    """One finished run's ``summary.json`` (and ``config.json``) as ``stn reproduce table1`` leaves it."""
    run_dir = results / folder / variant / model / f"seed{seed}"
    run_dir.mkdir(parents=True)
    summary: dict[str, Any] = {
        "model": model,
        "data": {"kind": "distorted-mnist", "variant": variant, "seed": seed, "num_train": num_train, "num_test": None},
        "seed": seed,
        "steps": steps,
        "train_samples": 60_000,
        "test_samples": 10_000,
        "test_error": error / 100,
        "time_s": 60.0,
    }
    if val_error is not None:
        summary["val_error"] = val_error / 100
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "config.json").write_text(json.dumps({"config": {"batch_size": 256}}))
    if table:
        (results / folder / "table1.md").write_text("# Table 1\n")


def _rows(markdown: str) -> dict[str, list[str]]:
    """``{"RTS ST-CNN Aff": cells...}`` of the summary table."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("Data",):
            rows[f"{cells[0]} {cells[1]}"] = cells
    return rows


@pytest.fixture
def results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    for seed, error in enumerate((1.0, 2.0, 3.0)):
        _run(results, "table1-r-quick", "r", "cnn", seed, error, 1_000)
    _run(results, "table1-rts-quick", "rts", "st-cnn-aff", 0, 3.0, 1_000)
    _run(results, "table1-rts-quick", "rts", "st-cnn-aff", 1, 5.0, 1_000)
    _run(results, "table1-rts-long", "rts", "st-cnn-aff", 0, 0.8, 14_063)  # the longest budget: it wins
    _run(results, "table1-rts-tiny", "rts", "st-cnn-aff", 0, 0.1, 50_000, num_train=32)  # a subset: left out
    _run(results, "not-table1", "rts", "cnn", 0, 0.1, 90_000, table=False)  # no table1.md: not a Table 1 folder
    return results


def test_the_table_has_one_row_per_cell_run_with_mean_sd_ratio_and_link(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = results / "summary"
    assert main(["reproduce", "summary", "--results", str(results), "--out", str(out)]) == 0
    text = (out / "summary.md").read_text()
    assert text in capsys.readouterr().out
    rows = _rows(text)
    assert set(rows) == {"R CNN", "RTS ST-CNN Aff"}
    _, _, paper, ours, seeds, budget, ratio, link = rows["R CNN"]
    assert (paper, ours, seeds, ratio) == ("1.2", "2.00 ± 1.00", "3", "1.67x")  # mean 2, sd 1 over 3 seeds
    assert budget == "1,000 steps (4.3 epochs)"
    assert link == "[table1-r-quick](../table1-r-quick/table1.md)"
    assert (out / link[link.index("(") + 1 : -1]).resolve() == (results / "table1-r-quick/table1.md").resolve()
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[1].startswith("r,cnn,1.2,2.0,1.0,3,")
    with Image.open(out / "summary.png") as image:
        assert image.format == "PNG"


def test_a_cell_run_at_several_budgets_takes_the_longest(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(["reproduce", "summary", "--results", str(results), "--out", str(out)])
    _, _, paper, ours, seeds, budget, ratio, link = _rows((out / "summary.md").read_text())["RTS ST-CNN Aff"]
    assert (paper, ours, seeds, ratio) == ("0.5", "0.80", "1", "1.60x")  # not the 1,000-step 4.00 ± 1.41
    assert budget == "14,063 steps (60 epochs)" and "table1-rts-long/table1.md" in link
    cell = next(c for c in collect_cells(results) if c.model == "st-cnn-aff")
    assert cell.others == 1  # the quick folder was seen, and passed over; the subset run was not a candidate


def test_equally_long_budgets_go_to_more_seeds_then_lower_validation_never_test(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _run(results, "a", "e", "cnn", 0, 1.0, 500)
    _run(results, "b", "e", "cnn", 0, 5.0, 500)
    _run(results, "b", "e", "cnn", 1, 5.0, 500)
    _run(results, "c", "p", "cnn", 0, 1.0, 500, val_error=2.0)  # best test error, worse validation
    _run(results, "d", "p", "cnn", 0, 3.0, 500, val_error=1.0)
    chosen = {c.variant: c.folder.name for c in collect_cells(results)}
    assert chosen == {"e": "b", "p": "d"}  # two seeds beat one; then validation decides, whatever the test error


def test_a_longer_validated_group_beside_a_shorter_unvalidated_one(tmp_path: Path) -> None:
    """The validation rule looks at the longest groups only: a shorter group without validation errors is passed
    over, not averaged (its empty list once failed the whole summary)."""
    results = tmp_path / "results"
    _run(results, "old", "e", "st-cnn-tps", 0, 2.0, 1_000)
    _run(results, "long-a", "e", "st-cnn-tps", 0, 0.9, 14_063, val_error=1.0)
    _run(results, "long-b", "e", "st-cnn-tps", 0, 0.7, 14_063, val_error=0.8)
    (cell,) = collect_cells(results)
    assert cell.folder.name == "long-b" and cell.others == 2


def test_no_table1_runs_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["reproduce", "summary", "--results", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("stn reproduce summary: error: no finished Table 1 run") and err.count("\n") == 1
    assert main(["reproduce", "summary", "--results", str(tmp_path / "missing")]) == 1
    assert "no such folder" in capsys.readouterr().err
