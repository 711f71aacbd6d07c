"""Table 3 of the paper: CUB-200-2011 bird classification accuracy, CNN vs 2x / 4x ST-CNN, attention boxes.

``stn reproduce table3 --cub-root DIR`` trains the four rows of the table on the user's copy of CUB-200-2011
(:mod:`stn.data.cub`), each in its own run of the training engine (``<runs-dir>/<row>/``: skipped when finished,
resumed when interrupted, scored again by ``stn eval``), and writes ``<out>/<row>/result.json``, ``table3.md``
beside the paper's numbers and, for each ST-CNN, ``<out>/<row>/attention.png``: test images with the bird's box
(dashed) and each transformer's window. The table also reports how often a window's centre lies on the bird's box
and the mean fraction of each window covered by the box (the boxes are never used for training).

Rows (``--input-size`` S = 448 in the paper): the CNN sees the image at S/2; "2xST-CNN 224px" sees the image at
S/2 and samples S/2 crops from it (upsampling its half-size windows); "2x / 4xST-CNN 448px" see the image at S
and sample S/2 crops at full resolution. The localisation backbone always sees the image at S/2.

Recipe (ours where the paper is silent): an ImageNet-pretrained backbone from timm (``--backbone``, default
``inception_v3``; the paper's is Inception with batch norm), SGD with momentum 0.9, batch 32, learning rate 0.01
divided by 10 at 2/3 of training, weight decay 1e-4, random horizontal flips; the localisation net learns 1e-4
times slower than the rest (the paper trains it far slower). Budgets: ``quick`` 5 epochs, ``paper`` 50 epochs.

Example (shell)::

    stn reproduce table3 --cub-root ~/data/CUB_200_2011 --budget quick
    stn reproduce table3 --cub-root shared/data/cub_200_2011_subset --backbone tiny --no-pretrained \\
        --input-size 64 --epochs 2 --workers 0 --out results/cub_smoke     # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from stn.data.specs import build, cub_spec
from stn.engine.callbacks import default_callbacks
from stn.engine.config import Preset, TrainConfig
from stn.engine.options import option_type, positive_int
from stn.engine.rundir import read_summary, run_status
from stn.engine.tasks import ClassificationTask
from stn.engine.trainer import Trainer
from stn.experiments._common import add_common_arguments, config_from_args, spec_trainer, trained_model
from stn.io import format_markdown_table, write_report, write_text_atomic
from stn.models import create_model
from stn.models.cub import attention_boxes, attention_stats, attention_theta
from stn.models.registry import model_spec

__all__ = [
    "BUDGETS",
    "RUNS",
    "Run",
    "add_arguments",
    "make_trainer",
    "run",
    "write_table",
]


@dataclass(frozen=True)
class Run:
    """One row of Table 3."""

    label: str
    model: str
    full_resolution: bool  # the input is S (else S/2)
    paper_accuracy: float


RUNS = {
    "cnn-224": Run("CNN (224px)", "cub-cnn", False, 82.3),
    "2x-224": Run("2×ST-CNN (224px)", "cub-st-cnn-2x", False, 83.1),
    "2x-448": Run("2×ST-CNN (448px)", "cub-st-cnn-2x", True, 83.9),
    "4x-448": Run("4×ST-CNN (448px)", "cub-st-cnn-4x", True, 84.1),
}

_RECIPE = {
    "batch_size": 32,
    "lr": 0.01,
    "weight_decay": 1e-4,
    "lr_milestones": (2 / 3,),
    "localization_lr_scale": 1e-4,
    "eval_batch_size": 64,
    "theta_samples": 8,  # the θ history keeps these test images in the checkpoint: 2.4 MB each at 448 px
    "num_workers": 4,  # decoding the photos
}
BUDGETS = {
    "quick": Preset("5 epochs", {"epochs": 5, **_RECIPE}),
    "paper": Preset("50 epochs", {"epochs": 50, **_RECIPE}),
}
_THETA_STATS_SAMPLES = 64  # test images whose θ statistics are logged every epoch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``stn reproduce table3``."""
    add_common_arguments(parser, BUDGETS, "results/table3", mnist=False, runs="runs/table3")
    parser.add_argument("--cub-root", required=True, type=Path, help="the CUB_200_2011 folder (or its parent)")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS), help="rows of the table to run")
    parser.add_argument("--backbone", default="inception_v3", help="built-in (tiny, resnet18) or a timm model name")
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="random initialisation")
    parser.add_argument("--input-size", type=positive_int, default=448, help="S, the full input size (crops are S/2)")
    parser.add_argument("--limit-train", type=positive_int, help="use only N training images (evenly spaced)")
    parser.add_argument("--limit-test", type=positive_int, help="use only N test images (evenly spaced)")
    parser.add_argument("--figure-images", type=positive_int, default=8, help="test images in each figure")
    parser.add_argument(
        "--num-workers",
        "--workers",
        dest="num_workers",
        type=option_type("num_workers"),
        help="data-loading processes (default 4)",
    )


def make_trainer(
    key: str,
    config: TrainConfig,
    spec: Mapping[str, Any],
    run_dir: str | Path,
    backbone: str = "tiny",
    pretrained: bool = False,
    progress: bool = True,
) -> Trainer:
    """The :class:`~stn.engine.trainer.Trainer` of row ``key`` of the table on the CUB data of ``spec``
    (:func:`~stn.data.specs.cub_spec`; its ``image_size`` is the model's input, S or S/2), the model
    initialised from the config's seed; it resumes a run found in ``run_dir``."""
    row = RUNS[key]
    train_set, test_set = build(spec, "train"), build(spec, "test")
    options: dict[str, Any] = {
        "num_classes": train_set.num_classes,
        "backbone": backbone,
        "pretrained_backbone": pretrained,
    }
    if row.model != "cub-cnn":
        half = spec["image_size"] // 2 if row.full_resolution else spec["image_size"]
        options.update(crop_size=half, loc_size=half)
    model = create_model(row.model, seed=config.seed, **options)
    task = ClassificationTask(train_set.num_classes)
    callbacks = default_callbacks(stats_samples=_THETA_STATS_SAMPLES)
    return spec_trainer(
        model,
        spec,
        task,
        config,
        run_dir,
        sets=(train_set, test_set),
        callbacks=callbacks,
        title=row.label,
        progress=progress,
    )


def _run_row(key: str, args: argparse.Namespace, config: TrainConfig) -> dict[str, Any] | int | None:
    """Train (or resume) and score row ``key``: its result (``<out>/<key>/result.json``, read when there and the
    run in ``<runs-dir>/<key>`` finished with the same recipe and data), the exit code of an interrupted run, or
    None in the other processes of a data-parallel run (the main one writes the result)."""
    row = RUNS[key]
    run_dir, result_path = Path(args.runs_dir) / key, Path(args.out) / key / "result.json"
    size = args.input_size if row.full_resolution else args.input_size // 2
    spec = cub_spec(
        args.cub_root, image_size=size, limit_train=args.limit_train, limit_test=args.limit_test, seed=config.seed
    )
    if run_status(run_dir, config, spec) == "done" and result_path.is_file():
        print(f"{row.label}: finished before, skipped ({result_path})")
        return json.loads(result_path.read_text(encoding="utf-8"))
    make = partial(make_trainer, key, config, spec, run_dir, args.backbone, args.pretrained, not args.quiet)
    model = trained_model(row.label, run_dir, config, spec, make)
    if model is None or isinstance(model, int):
        return model
    summary, test_set = read_summary(run_dir), build(spec, "test")
    result = {
        "run": key,
        "label": row.label,
        "accuracy": 100 * round((1 - summary["test_error"]) * len(test_set)) / len(test_set),
        "test_images": len(test_set),
        "train_images": summary["train_samples"],
        "classes": test_set.num_classes,
        "image_size": size,
        "model": row.model,
        **model_spec(model)["kwargs"],
        "params": summary["params"],
        "train_seconds": summary["time_s"],
        "budget": args.budget,
        **config.to_dict(),
        "device": str(next(model.parameters()).device),
    }
    if row.model != "cub-cnn":
        theta = attention_theta(model, test_set, config.eval_batch_size, config.num_workers)
        result.update(attention_stats(theta, test_set.boxes))
        shown = torch.linspace(0, len(test_set) - 1, min(args.figure_images, len(test_set))).round().long()
        images = torch.stack([test_set[int(i)][0] for i in shown])
        from stn.viz import plot_attention_windows  # here: matplotlib stays out of the start-up

        plot_attention_windows(
            images, test_set.boxes[shown], attention_boxes(theta[shown]), result_path.with_name("attention.png")
        )
    write_text_atomic(result_path, json.dumps(result, indent=2) + "\n")
    return result


def run(args: argparse.Namespace) -> int:
    """Train and score the selected rows (skipping finished ones, resuming interrupted ones); write
    ``<out>/table3.md`` and the attention figures. Returns 0, or 128 + the signal that interrupted a run."""
    if args.input_size < 2 or args.input_size % 2:
        raise ValueError(f"--input-size must be an even number of pixels, got {args.input_size}")
    config = config_from_args(BUDGETS, args)
    for key in args.runs:
        result = _run_row(key, args, config)
        if isinstance(result, int):
            return result
        if result is not None:
            print(f"{result['label']}: accuracy {result['accuracy']:.2f}% on {result['test_images']} test images")
    print(f"wrote {write_table(args.out)}")
    return 0


def write_table(out: str | Path) -> Path:
    """``<out>/table3.md``: our accuracies (from the results found) beside the paper's, and the figures."""
    out = Path(out)
    rows, figures = [], []
    for key, spec in RUNS.items():
        path = out / key / "result.json"
        if not path.is_file():
            rows.append([spec.label, spec.paper_accuracy, "—", "", "not run"])
            continue
        r = json.loads(path.read_text())
        # older results say "pretrained"
        init = "ImageNet" if r.get("pretrained_backbone", r.get("pretrained")) else "random init"
        setup = (
            f"{r['backbone']} ({init}), {r['image_size']}px, {r['train_images']} train / {r['test_images']} test "
            f"images of {r['classes']} classes, {r['epochs']} epochs, localisation lr x{r['localization_lr_scale']:g}, "
            f"trained in {r['train_seconds']:.0f} s on {r['device']}"
        )
        attention = ""
        if "centre_in_box" in r:
            attention = f"{100 * r['centre_in_box']:.0f}% / {100 * r['window_on_box']:.0f}%"
            figures.append(f"{spec.label}:\n\n![{spec.label}]({key}/attention.png)\n")
        rows.append([spec.label, spec.paper_accuracy, f"{r['accuracy']:.1f}", attention, setup])
    header = ["Model", "paper", "ours", "window centre on bird / window on bird", "our run"]
    text = (
        "# Table 3: CUB-200-2011 test accuracy (%)\n\n"
        "Paper: Jaderberg et al. 2015, Table 3 (Inception with batch norm, ImageNet-pretrained, all 200 classes). "
        "Attention: the share of (test image, transformer) pairs whose window centre lies in the bird's box, and "
        "the mean share of a window covered by the box (the boxes are never used in training).\n\n"
        + format_markdown_table(rows, header)
        + "".join(f"\n{f}" for f in figures)
    )
    return write_report(out, "table3", text)
