"""MNIST addition (appendix, Table 4): FCN, CNN, ST-FCN and 2xST-FCN on the sum of two RTS digits.

Two 42x42 channels, each with an independently RTS-distorted digit (the data layer's ``addition`` variant); the
network outputs their sum (19 classes). Models (:mod:`stn.models.appendix`, about 400k parameters each): FCN, CNN,
ST-FCN (one transformer that sees and warps both channels) and 2xST-FCN (two transformers in parallel, their
outputs concatenated into 4 channels) with affine, projective or 16-point TPS transformers, each trained by the
training engine with the Table 1 recipe in ``<runs-dir>/<model>`` (skipped when finished, resumed when
interrupted). ``stn reproduce addition`` writes ``addition.md`` (test error beside the paper's), ``results.json``
and, for every transformer model, ``transformers-<model>.png``: the two input channels and every output channel
of its transformer(s), the paper's Table 4 (right). The ``quick`` budget is far too short for this task, whose
models start at the chance level (about 90% error): it checks the pipeline; ``paper`` trains 150,000 steps of
256 (for a GPU). Our runs: docs/reproductions.md.

Example (shell)::

    stn reproduce addition --budget quick --models fcn cnn 2xst-fcn-aff --data-dir ~/data/mnist
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch

from stn.data.specs import distorted_mnist_spec
from stn.engine.config import Preset
from stn.engine.options import add_standardize_option, chosen_model_options, positive_int
from stn.engine.rundir import read_summary
from stn.engine.trainer import Trainer
from stn.experiments._common import add_common_arguments, config_from_args, make_trainer, train_run
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
    "test error (%)": "{test:.1f}",
    "paper (%)": "{paper_error:.1f}",
    "train error (%)": "{train:.1f}",
    "steps": "{steps}",
    "train time (s)": "{time_s:.0f}",
}


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


@torch.no_grad()
def plot_transformers(trainer: Trainer, path: str | Path, title: str) -> Path | None:
    """The two input channels of a few test samples and every output channel of each transformer; None for a
    model without one."""
    images = trainer.eval_inputs(_FIGURE_SAMPLES)
    captures = capture_transformers(trainer.model, images)
    if not captures:
        return None
    outputs = next(iter(captures.values())).outputs.cpu()  # (B, N, C, h, w)
    labels = [int(trainer.eval_data[i][1]) for i in range(len(images))]
    rows = [(f"input ch{c + 1}", images[:, c].cpu()) for c in range(images.shape[1])]
    n = outputs.shape[1]
    rows += [
        (f"ST{k + 1} ch{c + 1}" if n > 1 else f"ST ch{c + 1}", outputs[:, k, c])
        for k in range(n)
        for c in range(outputs.shape[2])
    ]
    from stn.viz import plot_image_rows  # here: matplotlib stays out of the command line's start-up

    return plot_image_rows(rows, path, title=f"{title}: test samples with sums {labels}")


def run(args: argparse.Namespace) -> int:
    """Train the selected models; write ``<out>/addition.md``, ``results.json`` and the transformer figures."""
    budget = BUDGETS[args.budget]
    config = config_from_args(BUDGETS, args)
    data = {k: budget.data[k] if getattr(args, k) is None else getattr(args, k) for k in ("num_train", "num_test")}
    spec = distorted_mnist_spec("addition", seed=config.seed, **data)
    chosen = chosen_model_options(args)
    options = {"resume": True, "progress": not args.quiet, "data_dir": args.data_dir, "model_options": chosen, **data}
    summaries = {}
    for key in args.models:
        label, name = MODELS[key]
        run_dir = Path(args.runs_dir) / key
        make = partial(make_trainer, "addition", name, config, run_dir, **options)
        trained = train_run(label, run_dir, config, spec, make, chosen)
        if isinstance(trained, int):
            return trained
        if trained is not None:
            plot_transformers(trained, Path(args.out) / f"transformers-{key}.png", label)
        summaries[key] = read_summary(run_dir) if trained is None else trained.summary
    results = {MODELS[k][0]: {**s, "paper_error": PAPER[MODELS[k][0]]} for k, s in summaries.items()}
    rows = [
        {"label": label, "name": MODELS[key][1], **r, "test": 100 * r["test_error"], "train": 100 * r["train_error"]}
        for key, (label, r) in zip(summaries, results.items())
    ]
    first = next(iter(summaries.values()))
    text = (
        "# MNIST addition (appendix, Table 4)\n\n"
        f"Two 42x42 RTS digits as two channels, 19 classes (the sum). Budget `{args.budget}`: {config.iterations} "
        f"steps of {config.batch_size} at learning rate {config.lr} on {first['train_samples']} training samples per "
        f"epoch (fresh distortions and partners each epoch), {first['test_samples']} test samples, MNIST source "
        f"`{first['source']}`, seed {config.seed}"
        + (
            ", inputs standardised for the localisation nets and the classifier (not the paper's)"
            * chosen["standardize"]
        )
        + ". Always predicting the most frequent sum (9) gives 90% error.\n\n"
        f"{markdown_table(rows, _COLUMNS)}\n"
        + "".join(
            f"![{MODELS[k][0]}](transformers-{k}.png)\n"
            for k in summaries
            if (Path(args.out) / f"transformers-{k}.png").is_file()
        )
    )
    record = {"budget": args.budget, **config.to_dict(), **data, **chosen, "results": results}
    print(f"wrote {write_report(args.out, 'addition', text, record)}")
    return 0
