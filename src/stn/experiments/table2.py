"""Table 2 of the paper: sequence error on SVHN multi-digit recognition, CNN vs ST-CNN Single vs ST-CNN Multi.

``stn reproduce table2 --svhn-root DIR`` trains each model on the user's copy of SVHN format 1 (``DIR/train``,
``DIR/extra``, ``DIR/test``; the first call on a split caches its crops, see :class:`stn.data.svhn.SVHNSequences`)
in its own run of the training engine, ``<out>/<crop>px/<model>/`` (skipped when finished, resumed when
interrupted, scored again by ``stn eval``), and writes ``table2.md`` beside the paper's numbers: a second call
with the other ``--crop`` fills the other column.

Recipe (ours where the paper is silent): SGD with momentum 0.9, batch 128, base learning rate 0.01 divided by 10
at 1/2 and 3/4 of training, weight decay 5e-4, localisation nets at 1/10 of the base rate (the paper), random
54x54 (108x108) crops of the 64 (128) px images for training and the central crop for testing (Goodfellow et al.).
Budgets: :data:`BUDGETS`. The task is :class:`~stn.engine.tasks.SequenceTask`: a sequence counts as wrong if any
of its 5 positions (digit or null class) is wrong.

Example (shell)::

    stn reproduce table2 --svhn-root ~/data/svhn --crop 64 --budget quick
    stn reproduce table2 --svhn-root ~/data/svhn --crop 128 --budget quick   # fills the 128px column
    torchrun --nproc_per_node 4 -m stn reproduce table2 --svhn-root ~/data/svhn --budget paper --device cuda
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from stn.engine.config import Preset, TrainConfig
from stn.engine.options import option_type
from stn.experiments._common import add_common_arguments, config_from_args, spec_trainer, train_run
from stn.io import write_report

__all__ = ["BUDGETS", "MODELS", "PAPER", "add_arguments", "make_trainer", "run", "write_table"]

# Sequence error (%) reported in the paper, (64px, 128px).
PAPER = {"CNN": (4.0, 5.6), "DRAM": (3.9, 4.5), "ST-CNN Single": (3.7, 3.9), "ST-CNN Multi": (3.6, 3.9)}
# --models key -> (row of the table, registered model)
MODELS = {
    "cnn": ("CNN", "svhn-cnn"),
    "single": ("ST-CNN Single", "svhn-st-cnn-single"),
    "multi": ("ST-CNN Multi", "svhn-st-cnn-multi"),
}
CROPS = (64, 128)
_RECIPE = {
    "batch_size": 128,
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "lr_milestones": (0.5, 0.75),
    "localization_lr_scale": 0.1,
}
BUDGETS = {
    "quick": Preset("train split only, a first look", {**_RECIPE, "iterations": 5_000}, {"splits": ("train",)}),
    "paper": Preset("train + extra splits", {**_RECIPE, "iterations": 150_000}, {"splits": ("train", "extra")}),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``stn reproduce table2``."""
    parser.add_argument("--svhn-root", required=True, type=Path, help="folder with train/, extra/, test/ (format 1)")
    parser.add_argument("--crop", type=int, choices=CROPS, default=64, help="64 (tight) or 128 (loose)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="models to run")
    parser.add_argument("--cache-dir", type=Path, help="where preprocessed arrays are cached")
    add_common_arguments(parser, BUDGETS, "results/table2", mnist=False)
    parser.add_argument("--num-workers", type=option_type("num_workers"), help="data-loading processes (default 0)")


def make_trainer(
    key: str,
    config: TrainConfig,
    spec: Mapping[str, Any],
    run_dir: str | Path,
    *,
    model_options: Mapping[str, Any] | None = None,
    resume: bool = True,
    progress: bool = True,
):
    """The :class:`~stn.engine.trainer.Trainer` of model ``key`` on the SVHN data of ``spec``
    (:func:`stn.data.specs.svhn_spec`), initialised from the config's seed; ``model_options`` go to
    the model factory (e.g. ``fc_units``, ``batch_norm``, ``dropout``)."""

    from stn.data.svhn import INPUT_SIZE
    from stn.engine.tasks import SequenceTask
    from stn.models import create_model

    label, name = MODELS[key]
    size = INPUT_SIZE[spec["crop"]]
    model = create_model(name, seed=config.seed, in_shape=(3, size, size), **(model_options or {}))
    task = SequenceTask(model.max_digits, model.num_classes + 1)
    title = f"{label} ({spec['crop']}px)"
    return spec_trainer(model, spec, task, config, run_dir, resume=resume, title=title, progress=progress)


def run(args: argparse.Namespace) -> int:
    """Train and score the selected models; write ``<out>/table2.md``. Returns the exit code."""
    from stn.data.specs import svhn_spec

    config = config_from_args(BUDGETS, args)
    splits = BUDGETS[args.budget].splits
    spec = svhn_spec(args.svhn_root, crop=args.crop, splits=splits, seed=config.seed, cache_dir=args.cache_dir)
    for key in args.models:
        label, run_dir = f"{MODELS[key][0]} ({args.crop}px)", Path(args.out) / f"{args.crop}px" / key
        make = partial(make_trainer, key, config, spec, run_dir, progress=not args.quiet)
        trained = train_run(label, run_dir, config, spec, make)
        if isinstance(trained, int):
            return trained
        if trained is not None:
            s = trained.summary
            print(f"{label}: sequence error {100 * s['test_error']:.2f}% on {s['test_samples']} images")
    print(f"wrote {write_table(args.out)}")
    return 0


def write_table(out: str | Path) -> Path:
    """``<out>/table2.md``: our sequence errors (from the finished runs found) beside the paper's."""
    from stn.io import format_markdown_table

    out = Path(out)
    keys = {label: key for key, (label, _) in MODELS.items()}
    rows = []
    for label, paper in PAPER.items():
        ours, notes = [], []
        for crop in CROPS:
            path = out / f"{crop}px" / keys.get(label, "-") / "summary.json"
            summary = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
            ours.append(f"{100 * summary['test_error']:.2f}" if summary else "—")
            if summary:
                notes.append(
                    f"{crop}px: {summary['steps']} steps on {summary['train_samples']:,} sequences "
                    f"({', '.join(summary['data']['splits'])}), {summary['params']:,} params, "
                    f"{summary['time_s'] / 60:.1f} min"
                )
        if label not in keys:
            notes = ["not implemented here (the recurrent attention model of Ba et al.)"]
        rows.append([label, f"{paper[0]:.1f}", ours[0], f"{paper[1]:.1f}", ours[1], "; ".join(notes)])
    header = ["Model", "paper 64px", "ours 64px", "paper 128px", "ours 128px", "our run"]
    text = (
        "# Table 2: SVHN sequence error (%)\n\n"
        "A sequence is wrong if any of its 5 positions (digit or null class) is wrong. "
        "Paper: Jaderberg et al. 2015, Table 2.\n\n" + format_markdown_table(rows, header)
    )
    return write_report(out, "table2", text)
