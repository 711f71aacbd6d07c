"""MNIST addition (appendix, Table 4): FCN, CNN, ST-FCN and 2xST-FCN on the sum of two RTS digits.

Two 42x42 channels, each with an independently RTS-distorted digit (the data layer's ``addition`` variant); the
network outputs their sum (19 classes). Models (:mod:`stn.models.appendix`, about 400k parameters each): FCN, CNN,
ST-FCN (one transformer that sees and warps both channels) and 2xST-FCN (two transformers in parallel, their outputs
concatenated into 4 channels) with affine, projective or 16-point TPS transformers, each trained by the training
engine with the Table 1 recipe in ``<runs-dir>/<model>/seed<k>`` for each of ``--seeds`` (skipped when finished,
resumed when interrupted), the last ``--validation`` training digits held out (10,000 by default, as Table 1's).
``stn reproduce addition`` writes ``addition.md`` (test error, mean ± sd over the seeds, beside the paper's, and
each seed's validation error), ``results.json`` and, for every transformer model, ``transformers-<model>.png``: the
two input channels and every output channel of its transformer(s) for the seed that ships (the lowest validation
error), the paper's Table 4 (right). The ``quick`` budget is far too short for this task, whose models start at the
chance level (about 90% error): it checks the pipeline; ``paper`` trains 150,000 steps of 256 (for a GPU). Our runs:
docs/reproductions.md.

Example (shell)::

    stn reproduce addition --budget quick --models fcn cnn 2xst-fcn-aff --data-dir ~/data/mnist
    stn reproduce addition --budget paper --models 2xst-fcn-tps --seeds 3 --data-dir ~/data/mnist
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from stn.data import VALIDATION_SIZE
from stn.data.specs import build, distorted_mnist_spec
from stn.engine.batches import first_samples
from stn.engine.config import Preset
from stn.engine.options import (
    add_seeds_option,
    add_standardize_option,
    add_validation_option,
    chosen_model_options,
    positive_int,
    seed_list,
)
from stn.engine.rundir import read_summary
from stn.experiments._common import add_common_arguments, config_from_args, make_trainer, trained_model
from stn.experiments.selection import mean_sd, seed_cell
from stn.io import markdown_table, write_report
from stn.modules.diagnostics import capture_transformers

__all__ = ["BUDGETS", "MODELS", "PAPER", "add_arguments", "plot_transformers", "run"]

# --models key -> (table row, registered model)
_SHORT = {"aff": "Aff", "proj": "Proj", "tps": "TPS"}
MODELS = {
    "fcn": ("FCN", "add-fcn"),
    "cnn": ("CNN", "add-cnn"),
    **{
        f"{kind}-{t}": (f"{row} {label}", f"add-{kind}-{t}")
        for kind, row in (("st-fcn", "ST-FCN"), ("2xst-fcn", "2xST-FCN"))
        for t, label in _SHORT.items()
    },
}
# Test error (%) in the paper's Table 4.
PAPER = {
    "FCN": 47.7,
    "CNN": 14.7,
    "ST-FCN Aff": 22.6,
    "ST-FCN Proj": 18.5,
    "ST-FCN TPS": 19.1,
    "2xST-FCN Aff": 9.0,
    "2xST-FCN Proj": 5.9,
    "2xST-FCN TPS": 5.8,
}
_FIGURE_SAMPLES = 8
_COLUMNS = {
    "model": "{label}",
    "name": "{name}",
    "params": "{params}",
    "test error (%)": "{test}",
    "paper (%)": "{paper_error:.1f}",
    "val error (%) per seed": "{val}",
    "ships (seed)": "{shipped_seed}",
    "train error (%)": "{train:.1f}",
    "steps": "{steps}",
    "train time (s), per run": "{time_s:.0f}",
}
_TABLE_ONLY = ("test", "val", "train", "time_s")


BUDGETS = {
    "quick": Preset(
        "a pipeline check: far too short for this task",
        {"iterations": 250, "batch_size": 64},
        {"num_train": 16_000, "num_test": 2_000},
    ),
    "paper": Preset(
        "150,000 steps of 256 on the full training split",
        {"iterations": 150_000},
        {"num_train": None, "num_test": None},
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``stn reproduce addition``."""
    add_common_arguments(parser, BUDGETS, "results/addition", runs="runs/addition")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="models to run")
    parser.add_argument("--num-train", type=positive_int, help="override the budget's training samples per epoch")
    parser.add_argument("--num-test", type=positive_int, help="override the budget's number of test samples")
    add_standardize_option(parser)
    add_seeds_option(parser)
    add_validation_option(parser, VALIDATION_SIZE)


@torch.no_grad()
def plot_transformers(model: nn.Module, data: Dataset, path: str | Path, title: str) -> Path | None:
    """The two input channels of the first test samples of ``data`` and every output channel of each of
    ``model``'s transformers; None for a model without one."""
    images, labels = first_samples(data, _FIGURE_SAMPLES, next(model.parameters()).device)
    captures = capture_transformers(model.eval(), images)
    if not captures:
        return None
    outputs = next(iter(captures.values())).outputs.cpu()  # (B, N, C, h, w)
    rows = [(f"input ch{c + 1}", images[:, c].cpu()) for c in range(images.shape[1])]
    n = outputs.shape[1]
    rows += [
        (f"ST{k + 1} ch{c + 1}" if n > 1 else f"ST ch{c + 1}", outputs[:, k, c])
        for k in range(n)
        for c in range(outputs.shape[2])
    ]
    from stn.viz import plot_image_rows  # here: matplotlib stays out of the command line's start-up

    return plot_image_rows(rows, path, title=f"{title}: test samples with sums {labels.tolist()}")


def _cell(label: str, name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of the table: the model's runs over seeds (:func:`~stn.experiments.selection.seed_cell`: their mean ±
    sd and the seed that ships, chosen on validation error), errors kept as fractions like the runs' summaries."""
    cell = seed_cell(runs)
    sd = cell["test_error_sd"]
    return {
        "label": label,
        "name": name,
        "paper_error": PAPER[label],
        "seeds": cell["seeds"],
        "test_error": cell["test_error"] / 100,
        "test_error_sd": None if sd is None else sd / 100,
        "shipped_seed": cell["shipped_seed"],
        "runs": runs,
        # for the table
        "test": mean_sd(cell["test_errors"], 1),
        "val": "—" if cell["val_errors"] is None else " / ".join(f"{e:.1f}" for e in cell["val_errors"]),
        "train": statistics.mean(100 * r["train_error"] for r in runs),
        "params": runs[0]["params"],
        "steps": runs[0]["steps"],
        "time_s": statistics.mean(r["time_s"] for r in runs),
    }


def run(args: argparse.Namespace) -> int:
    """Train the selected models over the seeds; write ``<out>/addition.md``, ``results.json`` and the transformer
    figures (of each model's shipped seed). Returns 0, or 128 + the signal that interrupted a run."""
    budget = BUDGETS[args.budget]
    data = {k: budget.data[k] if getattr(args, k) is None else getattr(args, k) for k in ("num_train", "num_test")}
    validation = args.validation or None
    chosen = chosen_model_options(args)
    options = {"resume": True, "progress": not args.quiet, "data_dir": args.data_dir, "model_options": chosen}
    cells, test_data = {}, None
    for key in args.models:
        label, name = MODELS[key]
        runs, models = [], {}
        for seed in seed_list(args):
            config = config_from_args(BUDGETS, args, seed=seed)
            spec = distorted_mnist_spec("addition", seed=seed, validation=validation, root=args.data_dir, **data)
            run_dir = Path(args.runs_dir) / key / f"seed{seed}"
            make = partial(make_trainer, "addition", name, config, run_dir, validation=validation, **data, **options)
            model = trained_model(f"{label} seed {seed}", run_dir, config, spec, make, chosen)
            if isinstance(model, int):
                return model
            if model is None:  # another process of a data-parallel run: it trains, the main one reports
                continue
            runs.append(read_summary(run_dir))
            models[seed] = model
        if not models:
            continue
        cells[key] = _cell(label, name, runs)
        shipped = cells[key]["shipped_seed"]
        test_data = test_data or build(spec, "test")  # the same digits for every seed and model
        plot_transformers(
            models[runs[0]["seed"] if shipped is None else shipped],
            test_data,
            Path(args.out) / f"transformers-{key}.png",
            label if shipped is None else f"{label} (seed {shipped})",
        )
    if not cells:
        return 0
    first = cells[args.models[0]]["runs"][0]
    config = config_from_args(BUDGETS, args)
    held_out = (
        f"; the last {validation:,} training digits held out as validation, the seed that ships chosen on them"
        if validation
        else "; no validation digits held out (--validation 0)"
    )
    text = (
        "# MNIST addition (appendix, Table 4)\n\n"
        f"Two 42x42 RTS digits as two channels, 19 classes (the sum). Budget `{args.budget}`: {config.iterations} "
        f"steps of {config.batch_size} at learning rate {config.lr} on {first['train_samples']} training samples per "
        f"epoch (fresh distortions and partners each epoch), {first['test_samples']} test samples, MNIST source "
        f"`{first['source']}`, seeds {', '.join(map(str, seed_list(args)))}{held_out}"
        + (
            ", inputs standardised for the localisation nets and the classifier (not the paper's)"
            * chosen["standardize"]
        )
        + ". Test error: mean ± sd over the seeds. Always predicting the most frequent sum (9) gives 90% error.\n\n"
        f"{markdown_table(list(cells.values()), _COLUMNS)}\n"
        + "".join(
            f"![{MODELS[k][0]}](transformers-{k}.png)\n"
            for k in cells
            if (Path(args.out) / f"transformers-{k}.png").is_file()
        )
    )
    results = {c["label"]: {k: v for k, v in c.items() if k not in _TABLE_ONLY} for c in cells.values()}
    record = {"budget": args.budget, **config.to_dict(), **data, "validation": validation, **chosen}
    record["seeds"] = seed_list(args)
    print(f"wrote {write_report(args.out, 'addition', text, {**record, 'results': results})}")
    return 0
