"""Table 1 at a glance: one row per paper cell run, ours (mean ± sd over seeds) beside the paper's, and a figure.

``stn reproduce summary`` trains nothing: it reads every Table 1 results folder under ``--results`` (a folder
holding the ``table1.md`` of ``stn reproduce table1``, its runs in ``<variant>/<model>/seed<k>/summary.json``) and
writes to ``--out`` (default ``<results>/summary``):

* ``summary.md``: one row per cell of the paper's Table 1 (data variant, model) with a finished run: our test
  error (mean ± sd over seeds), the number of seeds, the budget (steps and epochs), the paper's error, the ratio
  ours / paper, and a link to the ``table1.md`` of the folder the runs come from; then the figure;
* ``summary.csv``: the same rows, machine-readable, with the seeds' errors;
* ``summary.png``: ours against the paper's per cell on a log scale (:func:`stn.viz.plot_against_paper`).

Which runs make a cell (:func:`collect_cells`): its seeds are grouped by folder and steps; the group trained
for the most steps (the longest budget) wins; among groups of equally many steps, the one with the most seeds,
then the one with the lowest mean validation error (when every one of them held validation digits out), then the
folder whose path sorts first. The test error never chooses. Runs on a subset of the digits (``--num-train``,
``--num-test``) are left out: they are not the paper's cells.

Example (shell)::

    stn reproduce summary                                   # results/ -> results/summary/
    stn reproduce summary --results runs --out runs/summary
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stn.engine.options import output_folder
from stn.experiments.selection import mean_sd
from stn.experiments.table1 import MODELS, PAPER, VARIANTS

__all__ = ["Cell", "add_arguments", "collect_cells", "run", "write_summary"]

_TABLE = "table1.md"  # what makes a folder a Table 1 results folder
_HEADER = ["Data", "Model", "paper (%)", "ours (%)", "seeds", "budget", "ours / paper", "runs"]


@dataclass
class Cell:
    """One cell of Table 1 (data ``variant``, ``model``) as run: the seeds of the group of runs chosen for it.

    Attributes:
        folder: the Table 1 results folder the runs come from.
        steps: optimiser steps of each run.
        errors: test error (%) per seed, in the order of ``seeds``.
        epochs: passes over the training digits those steps make (None when the runs keep no batch size).
        val_errors: validation error (%) per seed, where the runs held validation digits out.
        others: how many other groups of runs of the cell (other folders or budgets) were found.
    """

    variant: str
    model: str
    folder: Path
    steps: int
    seeds: list[int]
    errors: list[float]
    epochs: float | None = None
    val_errors: list[float] = field(default_factory=list)
    others: int = 0

    @property
    def paper(self) -> float:
        """The paper's test error (%) for the cell."""
        return PAPER[self.model][self.variant]

    @property
    def mean(self) -> float:
        """Our mean test error (%) over the seeds."""
        return statistics.mean(self.errors)

    @property
    def sd(self) -> float | None:
        """The sample standard deviation over the seeds (None for one seed)."""
        return statistics.stdev(self.errors) if len(self.errors) > 1 else None

    @property
    def label(self) -> str:
        """``"RTS ST-CNN Aff"``."""
        return f"{self.variant.upper()} {MODELS[self.model]}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``stn reproduce summary``."""
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="folder searched (with its sub-folders) for Table 1 results folders (default results)",
    )
    parser.add_argument("--out", type=output_folder, default=None, help="output folder (default <results>/summary)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _on_full_data(summary: dict[str, Any]) -> bool:
    """Whether a run trained and was tested on all the digits (runs made before data specs say only the variant)."""
    data = summary.get("data")
    return not isinstance(data, dict) or (data.get("num_train") is None and data.get("num_test") is None)


def _batch_size(run_dir: Path) -> int | None:
    """The run's batch size from its ``config.json`` (nested under ``"config"`` since the engine's run records)."""
    path = run_dir / "config.json"
    if not path.is_file():
        return None
    config = _read_json(path)
    return config.get("config", config).get("batch_size")


def _runs(folder: Path) -> list[tuple[str, str, Path, dict[str, Any]]]:
    """``(variant, model, run folder, summary)`` of every finished run on full data in a Table 1 folder."""
    found = []
    for variant in VARIANTS:
        for model in MODELS:
            for path in sorted((folder / variant / model).glob("seed*/summary.json")):
                summary = _read_json(path)
                missing = [k for k in ("seed", "steps", "test_error") if k not in summary]
                if missing:
                    raise ValueError(f"{path}: not a run's summary (no {', '.join(missing)})")
                if _on_full_data(summary):
                    found.append((variant, model, path.parent, summary))
    return found


def _group_cell(variant: str, model: str, folder: Path, runs: list[tuple[Path, dict[str, Any]]]) -> Cell:
    """The :class:`Cell` of the runs of one folder and budget."""
    runs = sorted(runs, key=lambda r: r[1]["seed"])
    first_dir, first = runs[0]
    batch, samples = _batch_size(first_dir), first.get("train_samples")
    return Cell(
        variant=variant,
        model=model,
        folder=folder,
        steps=int(first["steps"]),
        seeds=[s["seed"] for _, s in runs],
        errors=[100 * s["test_error"] for _, s in runs],
        epochs=first["steps"] * batch / samples if batch and samples else None,
        val_errors=[100 * s["val_error"] for _, s in runs if s.get("val_error") is not None],
    )


def _preference(cell: Cell, all_validated: bool) -> tuple:
    """Sort key of the rule in the module docstring: most steps, most seeds, lowest validation error, path."""
    val = statistics.mean(cell.val_errors) if all_validated else 0.0
    return (-cell.steps, -len(cell.seeds), val, str(cell.folder))


def collect_cells(results: str | os.PathLike) -> list[Cell]:
    """Every Table 1 cell with finished runs under ``results``, in the paper's order (variants R, RTS, P, E, TC;
    models as in its table), each from the group of runs the rule of the module docstring chooses.

    Raises:
        FileNotFoundError: ``results`` is not a folder.
    """
    results = Path(results)
    if not results.is_dir():
        raise FileNotFoundError(f"{results}: no such folder")
    groups: dict[tuple[str, str], dict[tuple[Path, int], list[tuple[Path, dict[str, Any]]]]] = {}
    for table in sorted(results.rglob(_TABLE)):
        for variant, model, run_dir, summary in _runs(table.parent):
            key = (table.parent, int(summary["steps"]))
            groups.setdefault((variant, model), {}).setdefault(key, []).append((run_dir, summary))
    cells = []
    for variant in VARIANTS:
        for model in MODELS:
            found = groups.get((variant, model))
            if not found:
                continue
            candidates = [_group_cell(variant, model, folder, runs) for (folder, _), runs in found.items()]
            most = max(c.steps for c in candidates)
            tied = [c for c in candidates if c.steps == most]
            validated = all(len(c.val_errors) == len(c.seeds) for c in tied)
            best = min(tied, key=lambda c: _preference(c, validated))  # the shorter groups lost already
            best.others = len(candidates) - 1
            cells.append(best)
    return cells


def _budget_text(cell: Cell) -> str:
    if cell.epochs is None:
        return f"{cell.steps:,} steps"
    epochs = f"{cell.epochs:.0f}" if cell.epochs >= 10 else f"{cell.epochs:.1f}"
    return f"{cell.steps:,} steps ({epochs} epochs)"


def _link(cell: Cell, out: Path) -> str:
    target = Path(os.path.relpath(cell.folder / _TABLE, out)).as_posix()
    return f"[{cell.folder.name}]({target})"


def write_summary(results: str | os.PathLike, out: str | os.PathLike, command: str | None = None) -> Path:
    """Write ``summary.md``, ``summary.csv`` and ``summary.png`` in ``out`` from the Table 1 runs under ``results``
    (see the module docstring); ``command``: the command line named in the Markdown. Returns the Markdown's path.

    Raises:
        FileNotFoundError: ``results`` is not a folder.
        ValueError: no finished Table 1 run there, or a ``summary.json`` that is not one.
    """
    from stn.io import format_markdown_table, write_csv, write_report
    from stn.viz import plot_against_paper

    results, out = Path(results), Path(out)
    cells = collect_cells(results)
    if not cells:
        raise ValueError(
            f"no finished Table 1 run under {results}: a Table 1 folder holds {_TABLE} and "
            "<variant>/<model>/seed<k>/summary.json (stn reproduce table1 writes both)"
        )
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in cells:
        star = "*" if c.variant == "tc" and c.model.startswith("st-") else ""
        ratio = f"{c.mean / c.paper:.2f}x"
        rows.append(
            [c.variant.upper(), MODELS[c.model], f"{c.paper}{star}", mean_sd(c.errors), len(c.seeds), _budget_text(c),
             ratio, _link(c, out)]
        )  # fmt: skip
    within = sum(c.mean <= 1.5 * c.paper for c in cells)
    folders = sorted({c.folder for c in cells})
    command = command or f"stn reproduce summary --results {results} --out {out}"
    text = [
        "# Table 1 at a glance: our test error against the paper's\n",
        f"Generated by `{command}` from the Table 1 results folders under `{results}` (each row links to the "
        "`table1.md` of its runs, which lists the commands that trained them). One row per cell of the paper's "
        "Table 1 that was run; ours is the mean ± sd of the test error (%) over the seeds, on the official 10,000 "
        "test digits distorted as the variant says. The paper trained 150,000 steps of 256 per model.\n",
        "Which runs make a row: where a cell was run at several budgets or in several folders, the runs trained "
        "for the most steps (the longest budget); among equally long ones, the folder with the most seeds, then "
        "the lowest mean validation error (where all of them held validation digits out), then the first path. "
        "The test error never chooses. Runs on a subset of the digits are left out.\n",
        format_markdown_table(rows, _HEADER),
    ]
    if any(c.variant == "tc" and c.model.startswith("st-") for c in cells):
        text.append("\\* TC: the paper gives one ST-FCN and one ST-CNN error without naming the transformer.\n")
    text.append(
        f"{within} of {len(cells)} cells are within 1.5x of the paper's error; {len(folders)} results folders "
        f"contribute.\n"
    )
    text.append("![our test error against the paper's, per cell, log scale](summary.png)\n")
    plot_against_paper(
        [{"label": c.label, "paper": c.paper, "ours": c.mean, "sd": c.sd, "group": c.variant} for c in cells],
        out / "summary.png",
        title="Table 1: ours against the paper's (test error, %)",
    )
    records = [
        {
            "variant": c.variant,
            "model": c.model,
            "paper_error": c.paper,
            "mean_error": round(c.mean, 4),
            "sd_error": None if c.sd is None else round(c.sd, 4),
            "seeds": len(c.seeds),
            "errors": " ".join(f"{e:.2f}" for e in c.errors),
            "steps": c.steps,
            "epochs": None if c.epochs is None else round(c.epochs, 1),
            "ratio": round(c.mean / c.paper, 3),
            "folder": c.folder.as_posix(),
            "other_runs": c.others,
        }
        for c in cells
    ]
    write_csv(records, out / "summary.csv")
    return write_report(out, "summary", "\n".join(text))


def run(args: argparse.Namespace) -> int:
    """Write the summary and print its Markdown; returns 0."""
    out = args.out or args.results / "summary"
    path = write_summary(args.results, out, f"stn reproduce summary --results {args.results} --out {out}")
    print(path.read_text(encoding="utf-8"))
    print(f"wrote {path}, {path.with_suffix('.csv')} and {path.with_suffix('.png')}")
    return 0
