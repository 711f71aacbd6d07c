"""Co-localisation (appendix, Table 5): ``stn reproduce colocalization``.

For one digit class at a time, 100 images of 84x84 hold one 28x28 digit of that class at a uniform random place
(**T**), or that plus sixteen random 6x6 crops of other digits as clutter (**TC**): the data layer's ``coloc`` /
``coloc-tc`` variants, made from the MNIST *test* split. :func:`stn.models.colocalization.colocalize` finds the
common digit by best response on the paper's triplet loss (not the paper's way: SGD on it moves every crop onto
empty background; why: docs/reproductions.md) and fits a ``coloc-st`` to the crops found, which is then scored on
these images and on 100 *held-out* images of the class. The embedding e() concatenates the hidden layers and
logits of a 28x28 digit classifier: the Table 1 CNN trained on R by the training engine in ``<runs-dir>/encoder``,
or any checkpoint given with ``--encoder``. A digit counts as localised when the crop's box overlaps the box the
digit was placed in with IoU > 0.5 (paper: 100% on T, 75-93% on TC). The command writes ``colocalization.md`` (per
class, T and TC), ``results.json`` and ``boxes.png`` (the crops over the sweeps and the transformer's). The budgets
are presets of the encoder's recipe (``--iterations``, ``--lr``... are the encoder's) plus the search's settings.

Example (shell)::

    stn reproduce colocalization --budget quick --digits 0 8 --data-dir ~/data/mnist
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from matplotlib import colormaps
from torch import Tensor

from stn.coords import box_iou
from stn.data import load_mnist
from stn.data.datasets import colocalization_set
from stn.data.specs import distorted_mnist_spec
from stn.engine.checkpoint import Progress, RunRecord, build_model, load_checkpoint
from stn.engine.config import Preset, TrainConfig
from stn.engine.distributed import resolve_device
from stn.engine.options import positive_int
from stn.experiments._common import (
    add_common_arguments,
    config_from_args,
    finished_checkpoint,
    make_trainer,
    train_run,
)
from stn.io import format_markdown_table, write_report
from stn.models import create_model
from stn.models.appendix import ActivationEncoder
from stn.models.colocalization import (
    DIGIT_SIZE,
    IOU_THRESHOLD,
    ColocalizationResult,
    colocalize,
    crop_boxes,
    fraction_localised,
)

__all__ = ["BUDGETS", "DATASETS", "add_arguments", "run"]

# table column -> data-layer variant
DATASETS = {"T": "coloc", "TC": "coloc-tc"}
PAPER = {"T": "100", "TC": "75-93"}
_FIGURE_IMAGES = 8


# The search and the fit, the same in every budget (each overridable on the command line but the margin).
_SEARCH = {
    "stride": 4,  # pixels between candidate crops
    "rounds": 20,  # best-response sweeps at most
    "fit_steps": 500,  # Adam steps fitting the transformer to the crops found
    "fit_lr": 1e-3,
    "margin": 1.0,
    "num_images": 100,  # co-localised together; as many again are held out
}
# The recipe is the encoder's: the Table 1 CNN trained on R by the training engine (SGD, batch 256).
BUDGETS = {
    "quick": Preset(
        "the encoder 1,000 steps at lr 0.03; digits 1, 4 and 8",
        {"iterations": 1000, "lr": 0.03},
        {**_SEARCH, "digits": (1, 4, 8)},
    ),
    "paper": Preset(
        "the encoder 10,000 steps; all ten digits", {"iterations": 10_000}, {**_SEARCH, "digits": tuple(range(10))}
    ),
}


# --- the experiment ------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``stn reproduce colocalization``."""
    add_common_arguments(parser, BUDGETS, "results/colocalization", runs="runs/colocalization")
    parser.add_argument(
        "--digits",
        type=int,
        nargs="+",
        default=None,
        choices=range(10),
        metavar="D",
        help="digit classes to co-localise (default: all ten; 1, 4 and 8 with the quick budget)",
    )
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS), help="T and/or TC")
    parser.add_argument(
        "--encoder",
        type=Path,
        help="checkpoint of a 28x28 digit classifier (e.g. from `stn train --data r --model cnn`) to use as e() "
        "instead of training one",
    )
    parser.add_argument("--stride", type=positive_int, help="pixels between candidate crops (default 4)")
    parser.add_argument("--rounds", type=positive_int, help="best-response sweeps at most (default 20)")
    parser.add_argument(
        "--fit-steps", type=positive_int, help="steps fitting the transformer to the crops (default 500)"
    )
    parser.add_argument("--num-images", type=positive_int, help="images per class and dataset (default 100)")


def _encoder(args: argparse.Namespace, config: TrainConfig) -> tuple[ActivationEncoder, str]:
    """e(): from ``--encoder``, else the Table 1 CNN trained on R with ``config`` in ``<runs-dir>/encoder``:
    trained, or resumed, by the training engine unless it finished before."""
    path = args.encoder
    if path is None:
        path = Path(args.runs_dir) / "encoder"
        spec = distorted_mnist_spec("r", seed=config.seed, root=args.data_dir)
        options = {"data_dir": args.data_dir, "resume": True, "figures": False, "progress": not args.quiet}
        make = partial(make_trainer, "r", "cnn", config, path, **options)
        if isinstance(train_run("encoder", path, config, spec, make), int):
            raise KeyboardInterrupt("the encoder's training was interrupted; run the command again to resume")
        path = finished_checkpoint("encoder", path)
    checkpoint = load_checkpoint(path)
    record, progress = RunRecord.of(checkpoint), Progress.of(checkpoint)
    if tuple(record.model_kwargs["in_shape"])[-2:] != (DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(f"{path}: the encoder must take 28x28 digits, got {record.model_kwargs}")
    model = build_model(checkpoint).eval()
    encoder = create_model("coloc-encoder", classifier=model).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    error = (progress.history or [{}])[-1].get("test_error")
    data = record.data.get("variant", "unknown data")
    about = f"`{record.model_name}` trained {progress.step} steps on {data}"
    return encoder, about + (f" (test error {100 * error:.2f}%)" if error is not None else "")


def _plot_boxes(
    runs: dict[str, tuple[Tensor, Tensor, ColocalizationResult, Tensor, Tensor, Tensor]], digit: int, path: Path
) -> Path:
    """Per dataset a row of co-localised images with the truth (green), the crops over the sweeps (red ->
    yellow) and the transformer's crop (cyan), and a row of held-out images with the truth and the transformer's
    crop."""
    rows, boxes = [], {}

    def add_row(label: str, images: Tensor, marks: list[tuple[Tensor, Any]]) -> None:
        """A row of ``images`` with the boxes ``(k, 4)`` of ``marks`` drawn in their colours."""
        boxes[len(rows)] = [[(tuple(b[j].tolist()), colour) for b, colour in marks] for j in range(len(images))]
        rows.append((label, images[:, 0]))

    for name, (images, truth, result, held_images, held_truth, held_theta) in runs.items():
        k = min(_FIGURE_IMAGES, len(images), len(held_images))
        size, last = images.shape[-2:], max(len(result.history) - 1, 1)
        sweeps = [(crop_boxes(t[:k], size), colormaps["autumn"](i / last)) for i, t in enumerate(result.history)]
        final, held = crop_boxes(result.theta[:k], size), crop_boxes(held_theta[:k], size)
        add_row(f"{name}: digit {digit}", images[:k], [(truth, "lime"), *sweeps, (final, "cyan")])
        add_row(f"{name}: held out", held_images[:k], [(held_truth, "lime"), (held, "cyan")])
    title = "truth green; best-response crops by sweep red -> yellow; the trained transformer's crop cyan"
    from stn.viz import plot_image_rows  # here: matplotlib stays out of the command line's start-up

    return plot_image_rows(rows, path, title=title, boxes=boxes)


def run(args: argparse.Namespace) -> int:
    """Co-localise every selected digit class on T and TC; write ``<out>/colocalization.md``, ``results.json`` and
    ``boxes.png``."""
    budget = BUDGETS[args.budget]
    settings = {k: v if getattr(args, k, None) is None else getattr(args, k) for k, v in budget.data.items()}
    search = {k: settings[k] for k in ("stride", "rounds", "margin", "fit_steps", "fit_lr")}
    config = config_from_args(BUDGETS, args)
    seed = config.seed
    device = resolve_device(config.device)
    out = Path(args.out)
    start = time.perf_counter()
    encoder, about = _encoder(args, config)
    encoder.to(device)  # e() is built on the CPU
    test = load_mnist(args.data_dir, "test")
    scores: dict[int, dict[str, dict[str, float]]] = {}
    digits = tuple(settings["digits"])
    n = settings["num_images"]
    for digit in digits:
        runs = {}
        for name in args.datasets:
            # one draw of 2n images: the first n are co-localised, the others held out
            images, boxes = colocalization_set(test, digit, DATASETS[name], 2 * n, seed)
            result = colocalize(
                images[:n].to(device), boxes[:n], encoder, **search, seed=seed, desc=f"{name} digit {digit}"
            )
            with torch.no_grad():
                held_theta = result.transformer.localize(images[n:].to(device)).cpu()
            held_iou = box_iou(crop_boxes(held_theta, images.shape[-2:]), boxes[n:])
            runs[name] = (images[:n], boxes[:n], result, images[n:], boxes[n:], held_theta)
            score = scores.setdefault(digit, {})[name] = {
                "localised_percent": 100 * result.localised,
                "held_out_percent": 100 * fraction_localised(held_iou),
                "mean_iou": result.iou.mean().item(),
                "sweeps": len(result.loss),
                "final_loss": result.loss[-1],
            }
            print(
                f"digit {digit} {name}: {score['localised_percent']:.0f}% localised (mean IoU "
                f"{score['mean_iou']:.2f}, {score['sweeps']} sweeps, loss {score['final_loss']:.3f}); held out "
                f"{score['held_out_percent']:.0f}%"
            )
        if digit == digits[0]:
            _plot_boxes(runs, digit, out / "boxes.png")
    columns = {"localised_percent": ("ours (%)", ".0f"), "held_out_percent": ("held out (%)", ".0f")}
    columns["mean_iou"] = ("mean IoU", ".2f")
    header = ["digit"] + [f"{name} {title}" for name in args.datasets for title, _ in columns.values()]
    rows = [
        [d] + [format(scores[d][name][key], f) for name in args.datasets for key, (_, f) in columns.items()]
        for d in digits
    ]
    paper = ", ".join(f"{name} {PAPER[name]}%" for name in args.datasets)
    text = (
        "# Co-localisation (appendix, Table 5)\n\n"
        f"Percentage of the {n} digits per class whose crop by the trained transformer has IoU > "
        f"{IOU_THRESHOLD} with the truth, and of {n} held-out digits of the class that took no part in the "
        f"optimisation. Paper: {paper}. Encoder e(): {about}. Crops found by best response on the paper's triplet "
        f"loss (candidates {search['stride']} px apart, at most {search['rounds']} sweeps), the transformer fitted to "
        f"them in {search['fit_steps']} steps (budget `{args.budget}`, seed {seed}, device {device}, "
        f"{time.perf_counter() - start:.0f} s in all).\n\n"
        f"{format_markdown_table(rows, header)}\n![crops](boxes.png)\n"
    )
    record = {
        "scores": scores,
        "encoder": about,
        "budget": args.budget,
        "encoder_iterations": config.iterations,
        "encoder_lr": config.lr,
        "encoder_batch_size": config.batch_size,
        **settings,
        "digits": list(digits),
        "seed": config.seed,
        "device": str(device),
    }
    print(f"wrote {write_report(out, 'colocalization', text, record)}")
    return 0
