"""Co-localisation (appendix, Table 5): ``stn reproduce colocalization``.

For one digit class at a time, 100 images of 84x84 hold one 28x28 digit of that class at a uniform random place
(**T**), or that plus sixteen random 6x6 crops of other digits as clutter (**TC**): the data layer's ``coloc`` /
``coloc-tc`` variants, made from the MNIST *test* split (:func:`stn.data.colocalization.colocalization_set`). A
``coloc-st`` attention transformer (its scale fixed at the digit's size) learns to crop the digit the images have
in common from the paper's triplet loss alone (:mod:`stn.models.colocalization`), by one of two methods
(``--method``), both trained by the training engine:

* ``sgd`` (default, **the paper's**): SGD over random pairs ``(n, m)`` on the triplet loss (``coloc-triplet`` with
  :class:`stn.engine.tasks.TripletTask`, on :class:`stn.data.colocalization.ColocalizationPairs`), a run per
  class and dataset in ``<runs-dir>/sgd``;
* ``search`` (**our departure**): best response on the same loss over each image's candidate crops, then the
  transformer fitted to the crops found (``coloc-locator`` with the regression task, in ``<runs-dir>/search``).

The embedding e() concatenates the hidden layers and logits of a 28x28 digit classifier: the Table 1 CNN trained
on R by the training engine in ``<runs-dir>/encoder``, or any checkpoint given with ``--encoder``. Either way the
trained transformer is scored on these images and on 100 *held-out* images of the class by the triplet task: a
digit counts as localised when the crop's box overlaps the box the digit was placed in with IoU > 0.5 (paper: 100%
on T, 75-93% on TC). The command writes ``colocalization.md`` (per class, T and TC), ``results.json`` and
``boxes.png`` (the crops over training, or over the search's sweeps, and the transformer's). The budgets are
presets of the encoder's recipe (``--iterations``, ``--lr``... are the encoder's) plus the methods' settings.

Example (shell)::

    stn reproduce colocalization --budget quick --digits 0 8 --data-dir ~/data/mnist
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from matplotlib import colormaps
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from stn.data import load_mnist
from stn.data.colocalization import ColocalizationPairs, colocalization_set
from stn.data.specs import distorted_mnist_spec
from stn.engine.callbacks import Reports, ThetaHistory
from stn.engine.checkpoint import THETA_HISTORY, Progress, RunRecord, build_model, load_checkpoint
from stn.engine.config import Preset, TrainConfig
from stn.engine.distributed import resolve_device
from stn.engine.evaluation import evaluate
from stn.engine.options import option_type, positive_int
from stn.engine.tasks import RegressionTask, TripletTask
from stn.engine.trainer import Trainer
from stn.experiments._common import (
    add_common_arguments,
    config_from_args,
    finished_checkpoint,
    make_trainer,
    train_run,
)
from stn.io import format_markdown_table, write_report
from stn.models import create_model
from stn.models.colocalization import DIGIT_SIZE, IOU_THRESHOLD, crop_boxes, search_crops

__all__ = ["BUDGETS", "DATASETS", "METHODS", "add_arguments", "run"]

# table column -> data-layer variant
DATASETS = {"T": "coloc", "TC": "coloc-tc"}
PAPER = {"T": "100", "TC": "75-93"}
METHODS = {"sgd": "SGD on the triplet loss (the paper's)", "search": "best response, then a fit (our departure)"}
_FIGURE_IMAGES = 8
Encoder = tuple[nn.Module, dict[str, Any]]  # e()'s trained classifier and its create_model arguments

# The methods' settings, the same in every budget but the SGD's length (each overridable on the command line but
# the margin).
_METHODS = {
    "num_images": 100,  # co-localised together; as many again are held out
    "margin": 1.0,
    "normalize": False,  # e(): each layer scaled to unit norm (not the paper's: its layers as they are)
    # sgd: the paper's localisation net (two 8-unit layers) trained by SGD with momentum, constant rate
    "pairs": 20,  # pairs (n, m) per step
    "coloc_lr": 0.01,
    # search: candidates, sweeps, then Adam (full batch) fitting a 128-unit localisation net to the crops found
    "stride": 4,
    "rounds": 20,
    "fit_steps": 500,
    "fit_lr": 1e-3,
}
# The recipe is the encoder's: the Table 1 CNN trained on R by the training engine (SGD, batch 256).
BUDGETS = {
    "quick": Preset(
        "the encoder 1,000 steps at lr 0.03, SGD 500 steps; digits 1, 4 and 8",
        {"iterations": 1000, "lr": 0.03},
        {**_METHODS, "steps": 500, "digits": (1, 4, 8)},
    ),
    "paper": Preset(
        "the encoder 10,000 steps, SGD 2,000 steps; all ten digits",
        {"iterations": 10_000},
        {**_METHODS, "steps": 2000, "digits": tuple(range(10))},
    ),
}
_SGD_HIDDEN = 8  # the paper's localisation net: two 8-unit layers (5,947 parameters; the text says 100k)
_SEARCH_HIDDEN = 128  # the search's fitted localisation net: 128-unit layers (100,627 parameters)


# --- the experiment ------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``stn reproduce colocalization``."""
    add_common_arguments(parser, BUDGETS, "results/colocalization", runs="runs/colocalization")
    parser.add_argument(
        "--method",
        choices=tuple(METHODS),
        default="sgd",
        help="; ".join(f"{k}: {v}" for k, v in METHODS.items()) + " (default sgd)",
    )
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
    parser.add_argument("--num-images", type=positive_int, help="images per class and dataset (default 100)")
    parser.add_argument(
        "--normalize",
        action="store_true",
        default=None,
        help="scale each layer of e() to unit norm (not the paper's e(); see docs/reproductions.md)",
    )
    sgd = parser.add_argument_group("sgd (the paper's method)")
    sgd.add_argument("--steps", type=positive_int, help="SGD steps (default 500 quick, 2,000 paper)")
    sgd.add_argument("--pairs", type=positive_int, help="pairs (n, m) per SGD step (default 20)")
    sgd.add_argument("--coloc-lr", type=option_type("lr"), help="SGD learning rate (default 0.01)")
    search = parser.add_argument_group("search (our departure)")
    search.add_argument("--stride", type=positive_int, help="pixels between candidate crops (default 4)")
    search.add_argument("--rounds", type=positive_int, help="best-response sweeps at most (default 20)")
    search.add_argument(
        "--fit-steps", type=positive_int, help="steps fitting the transformer to the crops (default 500)"
    )


def _encoder(args: argparse.Namespace, config: TrainConfig) -> tuple[nn.Module, dict[str, Any], str]:
    """The trained digit classifier of e(), its ``create_model`` arguments and a line about it: from
    ``--encoder``, else the Table 1 CNN trained on R with ``config`` in ``<runs-dir>/encoder``: trained, or
    resumed, by the training engine unless it finished before."""
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
    if record.model_name != "cnn" or tuple(record.model_kwargs["in_shape"])[-2:] != (DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(
            f"{path}: the encoder must be a `cnn` taking 28x28 digits, got {record.model_name} with "
            f"{record.model_kwargs}"
        )
    error = (progress.history or [{}])[-1].get("test_error")
    data = record.data.get("variant", "unknown data")
    about = f"`{record.model_name}` trained {progress.step} steps on {data}"
    about += f" (test error {100 * error:.2f}%)" if error is not None else ""
    return build_model(checkpoint).eval(), dict(record.model_kwargs), about


def _triplet_model(classifier: nn.Module, kwargs: dict[str, Any], hidden: int, normalize: bool, seed: int) -> nn.Module:
    """A ``coloc-triplet`` (``hidden``-unit localisation net initialised from ``seed``) whose e() holds the
    weights of ``classifier``, a ``cnn`` built with ``kwargs``."""
    model = create_model("coloc-triplet", seed=seed, hidden=hidden, encoder=kwargs, normalize=normalize)
    model.encoder.net.load_state_dict(classifier.classifier.state_dict())
    return model


def _train(
    label: str, run_dir: Path, config: TrainConfig, spec: dict[str, Any], make: Callable[[], Trainer]
) -> dict[str, Any]:
    """The checkpoint of the engine's run in ``run_dir`` (trained, resumed, or finished before)."""
    if isinstance(train_run(label, run_dir, config, spec, make), int):
        raise KeyboardInterrupt(f"{label}: interrupted; run the command again to resume")
    return load_checkpoint(finished_checkpoint(label, run_dir))


def _sgd(images: Tensor, boxes: Tensor, encoder: Encoder, *common: Any) -> tuple[nn.Module, Tensor]:
    """The paper's method: a ``coloc-triplet`` trained by SGD on random pairs of ``images`` ``(N, 1, H, W)``
    (``boxes`` ``(N, 4)`` for its metrics); ``common``: see :func:`run`. Returns the trained model and the crops
    ``(E, k, 3)`` of the first ``k`` images at the start and after each epoch."""
    s, config, run_dir, spec, label, quiet = common
    k = min(_FIGURE_IMAGES, len(images))
    sgd = TrainConfig(
        iterations=s["steps"], batch_size=s["pairs"], lr=s["coloc_lr"], lr_milestones=(), seed=config.seed,
        device=config.device, theta_samples=k,
    )  # fmt: skip

    def make() -> Trainer:
        model = _triplet_model(*encoder, _SGD_HIDDEN, s["normalize"], config.seed)
        pairs = [ColocalizationPairs(images, boxes, config.seed) for _ in range(2)]  # epochs set on the first only
        return Trainer(
            model, *pairs, TripletTask(s["margin"], IOU_THRESHOLD), sgd, run_dir=run_dir, resume=True,
            data_spec=spec, title=label, progress=not quiet, callbacks=[ThetaHistory(k), Reports()],
        )  # fmt: skip

    checkpoint = _train(label, run_dir, sgd, spec, make)
    theta = checkpoint[THETA_HISTORY]["theta"]["transformer"][:, :k, 0]  # the anchors' crops: the first k of 2k
    return build_model(checkpoint), theta


def _search(images: Tensor, encoder: Encoder, *common: Any) -> tuple[nn.Module, Tensor]:
    """Our departure: best response over the candidate crops of ``images`` ``(N, 1, H, W)``, then a
    ``coloc-locator`` fitted to the crops found by the engine (Adam, full batch); ``common``: see :func:`run`.
    Returns a ``coloc-triplet`` holding the fitted transformer, and the crops ``(S, k, 3)`` of the first ``k``
    images at the start and after each sweep."""
    s, config, run_dir, spec, label, quiet = common
    classifier, kwargs = encoder
    e = create_model("coloc-encoder", classifier=classifier, normalize=s["normalize"]).eval()
    device = next(classifier.parameters()).device
    found = search_crops(images.to(device), e, stride=s["stride"], rounds=s["rounds"], margin=s["margin"], desc=label)
    fit = TrainConfig(
        iterations=s["fit_steps"], batch_size=len(images), optimizer="adam", lr=s["fit_lr"], lr_milestones=(),
        seed=config.seed, device=config.device,
    )  # fmt: skip
    data = TensorDataset(images, found.crops[:, 1:])
    spec = {**spec, "search": {k: s[k] for k in ("stride", "rounds")}}

    def make() -> Trainer:
        net = create_model("coloc-locator", seed=config.seed, in_shape=tuple(images.shape[1:]), hidden=_SEARCH_HIDDEN)
        return Trainer(
            net, data, data, RegressionTask(), fit, run_dir=run_dir, resume=True, data_spec=spec, title=label,
            progress=not quiet, callbacks=[Reports()],
        )  # fmt: skip

    checkpoint = _train(label, run_dir, fit, spec, make)
    model = _triplet_model(classifier, kwargs, _SEARCH_HIDDEN, s["normalize"], config.seed)
    model.transformer.load_state_dict(build_model(checkpoint).transformer.state_dict())
    return model, found.history[:, :_FIGURE_IMAGES]


def _plot_boxes(runs: dict[str, dict[str, Any]], digit: int, method: str, path: Path) -> Path:
    """Per dataset a row of co-localised images with the truth (green), the crops over training or the sweeps
    (red -> yellow) and the transformer's crop (cyan), and a row of held-out images with the truth and the
    transformer's crop."""
    rows, boxes = [], {}

    def add_row(label: str, images: Tensor, marks: list[tuple[Tensor, Any]]) -> None:
        """A row of ``images`` with the boxes ``(k, 4)`` of ``marks`` drawn in their colours."""
        boxes[len(rows)] = [[(tuple(b[j].tolist()), colour) for b, colour in marks] for j in range(len(images))]
        rows.append((label, images[:, 0]))

    for name, r in runs.items():
        k, size = r["history"].shape[1], r["images"].shape[-2:]
        last = max(len(r["history"]) - 1, 1)
        steps = [(crop_boxes(t, size), colormaps["autumn"](i / last)) for i, t in enumerate(r["history"])]
        final, held = crop_boxes(r["theta"][:k], size), crop_boxes(r["held_theta"][:k], size)
        add_row(f"{name}: digit {digit}", r["images"][:k], [(r["boxes"], "lime"), *steps, (final, "cyan")])
        add_row(f"{name}: held out", r["held_images"][:k], [(r["held_boxes"], "lime"), (held, "cyan")])
    over = "over the epochs" if method == "sgd" else "over the best-response sweeps"
    title = f"truth green; crops {over} red -> yellow; the trained transformer's crop cyan"
    from stn.viz import plot_image_rows  # here: matplotlib stays out of the command line's start-up

    return plot_image_rows(rows, path, title=title, boxes=boxes)


def _score(
    model: nn.Module, images: Tensor, boxes: Tensor, margin: float, seed: int, device: torch.device
) -> dict[str, float]:
    """The triplet task's metrics (loss, localised, iou) of ``model``'s crops of ``images`` (fixed pairs)."""
    task = TripletTask(margin, IOU_THRESHOLD)
    return evaluate(model, ColocalizationPairs(images, boxes, seed), task, device=device)


def run(args: argparse.Namespace) -> int:
    """Co-localise every selected digit class on T and TC by ``--method``; write ``<out>/colocalization.md``,
    ``results.json`` and ``boxes.png``."""
    budget = BUDGETS[args.budget]
    settings = {k: v if getattr(args, k, None) is None else getattr(args, k) for k, v in budget.data.items()}
    config = config_from_args(BUDGETS, args)
    seed, method = config.seed, args.method
    if method == "sgd" and settings["pairs"] > settings["num_images"]:
        raise ValueError(f"--pairs {settings['pairs']} exceeds the {settings['num_images']} images (--num-images)")
    device = resolve_device(config.device)
    out = Path(args.out)
    start = time.perf_counter()
    classifier, kwargs, about = _encoder(args, config)
    classifier.to(device)  # built on the CPU
    test = load_mnist(args.data_dir, "test")
    scores: dict[int, dict[str, dict[str, float]]] = {}
    digits, n = tuple(settings["digits"]), settings["num_images"]
    for digit in digits:
        runs = {}
        for name in args.datasets:
            # one draw of 2n images: the first n are co-localised, the others held out
            images, boxes = colocalization_set(test, digit, DATASETS[name], 2 * n, seed)
            folder = f"{name}-digit{digit}-seed{seed}" + ("-normalized" if settings["normalize"] else "")
            label, run_dir = f"{name} digit {digit}", Path(args.runs_dir) / method / folder
            spec = {"name": "colocalization", "variant": DATASETS[name], "digit": digit, "images": n, "seed": seed,
                    "encoder": about, "normalize": settings["normalize"]}  # fmt: skip
            common = (settings, config, run_dir, spec, label, args.quiet)
            if method == "sgd":
                model, history = _sgd(images[:n], boxes[:n], (classifier, kwargs), *common)
            else:
                model, history = _search(images[:n], (classifier, kwargs), *common)
            model = model.to(device)
            mine = _score(model, images[:n], boxes[:n], settings["margin"], seed, device)
            held = _score(model, images[n:], boxes[n:], settings["margin"], seed, device)
            with torch.no_grad():
                theta = model.transformer.localize(images.to(device)).cpu()
            runs[name] = {"images": images[:n], "boxes": boxes[:n], "history": history, "theta": theta[:n],
                          "held_images": images[n:], "held_boxes": boxes[n:], "held_theta": theta[n:]}  # fmt: skip
            score = scores.setdefault(digit, {})[name] = {
                "localised_percent": 100 * mine["localised"],
                "held_out_percent": 100 * held["localised"],
                "mean_iou": mine["iou"],
                "triplet_loss": mine["loss"],
            }
            print(
                f"digit {digit} {name}: {score['localised_percent']:.0f}% localised (mean IoU {score['mean_iou']:.2f}, "
                f"triplet loss {score['triplet_loss']:.3f}); held out {score['held_out_percent']:.0f}%"
            )
        if digit == digits[0]:
            _plot_boxes(runs, digit, method, out / "boxes.png")
    columns = {"localised_percent": ("ours (%)", ".0f"), "held_out_percent": ("held out (%)", ".0f")}
    columns |= {"mean_iou": ("mean IoU", ".2f"), "triplet_loss": ("loss", ".3f")}
    header = ["digit"] + [f"{name} {title}" for name in args.datasets for title, _ in columns.values()]
    rows = [
        [d] + [format(scores[d][name][key], f) for name in args.datasets for key, (_, f) in columns.items()]
        for d in digits
    ]
    paper = ", ".join(f"{name} {PAPER[name]}%" for name in args.datasets)
    how = (
        f"SGD on the triplet loss (the paper's method): {settings['steps']} steps of {settings['pairs']} random "
        f"pairs at lr {settings['coloc_lr']:g}, momentum 0.9, the paper's localisation net (8-unit layers)"
        if method == "sgd"
        else f"best response on the triplet loss (our departure from the paper's SGD: candidates "
        f"{settings['stride']} px apart, at most {settings['rounds']} sweeps), the transformer fitted to the crops "
        f"found in {settings['fit_steps']} steps"
    )
    text = (
        f"# Co-localisation (appendix, Table 5), method `{method}`\n\n"
        f"Percentage of the {n} digits per class whose crop by the trained transformer has IoU > "
        f"{IOU_THRESHOLD} with the truth, and of {n} held-out digits of the class that took no part in the "
        f"optimisation; the mean IoU and the triplet loss (margin {settings['margin']:g}) of the crops. Paper: "
        f"{paper}. Encoder e(): {about}{', each layer unit-normalised' if settings['normalize'] else ''}. {how} "
        f"(budget `{args.budget}`, seed {seed}, device {device}, {time.perf_counter() - start:.0f} s in all).\n\n"
        f"{format_markdown_table(rows, header)}\n![crops](boxes.png)\n"
    )
    record = {
        "method": method,
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
