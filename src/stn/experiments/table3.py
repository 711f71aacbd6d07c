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
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from stn.data.specs import build, cub_spec
from stn.engine.callbacks import default_callbacks
from stn.engine.config import Preset, TrainConfig
from stn.engine.options import option_type, positive_int
from stn.engine.tasks import ClassificationTask
from stn.engine.trainer import Trainer, read_summary, run_status
from stn.experiments._common import add_common_arguments, config_from_args, spec_trainer, trained_model, write_report
from stn.io import atomic_path, format_markdown_table, write_text_atomic
from stn.models import create_model
from stn.models.cub import attention_boxes
from stn.models.registry import model_spec

__all__ = [
    "BUDGETS",
    "RUNS",
    "Run",
    "add_arguments",
    "attention_stats",
    "attention_theta",
    "draw_attention",
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


@torch.no_grad()
def attention_theta(model: nn.Module, test_set: Dataset, batch_size: int, num_workers: int = 0) -> Tensor:
    """The attention θ ``(N, T, 3)`` of an ST-CNN on every image of ``test_set`` (on the model's device)."""
    device = next(model.parameters()).device
    model.eval()
    loader = DataLoader(test_set, batch_size, num_workers=num_workers)
    return torch.cat([model(x.to(device), return_theta=True)[1].cpu() for x, _ in loader])


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
        draw_attention(
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


# --- attention boxes (pure functions and the figure) -----------------------------------------------------------


def attention_stats(theta: Tensor, boxes: Tensor) -> dict[str, float | list[float]]:
    """How the attention windows of θ ``(N, T, 3)`` sit on the ground-truth boxes ``(N, 4)`` (normalised
    ``(x0, y0, x1, y1)``): ``centre_in_box`` (share of windows whose centre is in the box), ``window_on_box``
    (mean share of a window's area inside the box), and both per transformer (``..._per_transformer``).

    Example:
        >>> window = torch.tensor([[[0.5, 0.0, 0.0]]])  # one transformer reading [-0.5, 0.5]²
        >>> stats = attention_stats(window, torch.tensor([[-1.0, -1.0, 0.0, 0.0]]))  # the top-left quarter
        >>> stats["centre_in_box"], stats["window_on_box"]
        (1.0, 0.25)
    """
    windows = attention_boxes(theta)  # (N, T, 4)
    box = boxes[:, None, :]
    cx, cy = theta[..., 1], theta[..., 2]
    centre = ((cx >= box[..., 0]) & (cx <= box[..., 2]) & (cy >= box[..., 1]) & (cy <= box[..., 3])).float()
    width = (torch.minimum(windows[..., 2], box[..., 2]) - torch.maximum(windows[..., 0], box[..., 0])).clamp_min(0)
    height = (torch.minimum(windows[..., 3], box[..., 3]) - torch.maximum(windows[..., 1], box[..., 1])).clamp_min(0)
    area = (windows[..., 2] - windows[..., 0]) * (windows[..., 3] - windows[..., 1])
    covered = width * height / area
    return {
        "centre_in_box": centre.mean().item(),
        "window_on_box": covered.mean().item(),
        "centre_in_box_per_transformer": centre.mean(0).tolist(),
        "window_on_box_per_transformer": covered.mean(0).tolist(),
    }


def draw_attention(images: Tensor, boxes: Tensor, windows: Tensor, path: str | Path, columns: int = 4) -> Path:
    """A PNG grid of ``images`` ``(K, 3, H, W)`` in [0, 1] with their boxes ``(K, 4)`` dashed white and the
    windows ``(K, T, 4)`` of each transformer in its own colour (all boxes normalised ``(x0, y0, x1, y1)``)."""
    import matplotlib  # here, so that building the ``stn`` parser stays fast
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    count = len(images)
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    fig = Figure(figsize=(3 * columns, 3 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    colours = matplotlib.colormaps["tab10"].colors
    for ax in axes.flat:
        ax.axis("off")
    for k in range(count):
        ax = axes.flat[k]
        ax.imshow(images[k].permute(1, 2, 0).clamp(0, 1).numpy(), extent=(-1, 1, 1, -1))
        for t, (x0, y0, x1, y1) in enumerate(windows[k].tolist()):
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2, ec=colours[t % len(colours)]))
        x0, y0, x1, y1 = boxes[k].tolist()
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5, ec="white", ls="--"))
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(1.05, -1.05)
    fig.suptitle("attention windows (one colour per transformer) and the bird's box (dashed)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return path
