"""Co-localisation (appendix, Table 5): an attention transformer that finds the common object of a set of images.

For one digit class at a time, 100 images of 84x84 hold one 28x28 digit of that class at a uniform random place
(**T**), or that plus sixteen random 6x6 crops of other digits as clutter (**TC**): the data layer's ``coloc`` /
``coloc-tc`` variants, made from the MNIST *test* split. With no labels and no boxes, the crops I_n^T that an
attention transformer (``coloc-st``) takes should minimise the paper's hinge loss

    L = sum_n sum_{m != n} max(0, ||e(I_n^T) - e(I_m^T)||² - ||e(I_n^T) - e(I_n^rand)||² + α),   α = 1,

where ``I_n^rand`` is a random crop of ``I_n`` and ``e`` (``coloc-encoder``) concatenates the hidden layers and
logits of a 28x28 digit classifier: the Table 1 CNN trained on R by the training engine in
``<runs-dir>/encoder``, or any checkpoint given with ``--encoder``.

**Not the paper's way**: SGD on L moves every crop onto empty background (why: docs/reproductions.md), so L is
minimised one image at a time, by **best response** (:func:`best_response`) over each image's 28x28 windows on a
``stride``-pixel grid, all starting at the image centre; the transformer is then fitted to those crops by
regression of θ (:func:`fit_transformer`), and its crops are scored, also on 100 *held-out* images of the class.
A digit counts as localised when the crop's box overlaps the box the digit was placed in with IoU > 0.5 (paper:
100% on T, 75-93% on TC). ``stn reproduce colocalization`` writes ``colocalization.md`` (per class, T and TC),
``results.json`` and ``boxes.png`` (the crops over the sweeps and the transformer's). The budgets are presets of
the encoder's recipe (``--iterations``, ``--lr``... are the encoder's) plus the search's settings.

Example (shell)::

    stn reproduce colocalization --budget quick --digits 0 8 --data-dir ~/data/mnist
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from matplotlib import colormaps
from torch import Tensor, nn
from tqdm.auto import tqdm

import stn
from stn.data import load_mnist
from stn.data.datasets import colocalization_set
from stn.data.specs import distorted_mnist_spec
from stn.engine.checkpoint import build_model, load_checkpoint
from stn.engine.config import Preset, TrainConfig
from stn.engine.options import positive_int
from stn.engine.trainer import resolve_device
from stn.experiments._common import add_common_arguments, config_from_args, image_rows, train_run, write_report
from stn.experiments.table1 import make_trainer
from stn.io import format_markdown_table
from stn.models import create_model
from stn.models.appendix import ActivationEncoder
from stn.models.cub import attention_boxes as window_boxes
from stn.modules import SpatialTransformer

__all__ = [
    "BUDGETS",
    "DATASETS",
    "ColocalizationResult",
    "add_arguments",
    "attention_boxes",
    "best_response",
    "box_iou",
    "candidate_crops",
    "colocalize",
    "expected_triplet_loss",
    "fit_transformer",
    "fraction_localised",
    "run",
]

# table column -> data-layer variant
DATASETS = {"T": "coloc", "TC": "coloc-tc"}
PAPER = {"T": "100", "TC": "75-93"}
DIGIT_SIZE = 28
IOU_THRESHOLD = 0.5
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


# --- boxes, candidates and the loss --------------------------------------------------------------------------


def attention_boxes(theta: Tensor, size: Sequence[int]) -> Tensor:
    """The input region an attention θ ``(N, 3)`` crops (:func:`stn.models.cub.attention_boxes`), as ``(N, 4)``
    ``(x0, y0, x1, y1)`` pixel edges of an input of ``size`` ``(H, W)``."""
    height, width = size
    return (window_boxes(theta) + 1) * theta.new_tensor([width, height, width, height]) / 2


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of paired boxes ``(N, 4)`` ``(x0, y0, x1, y1)``: ``(N,)``."""
    wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area - inter).clamp(min=1e-12)


def candidate_crops(size: int, crop: int, stride: int) -> Tensor:
    """Attention θ ``(G, 3)`` of the ``crop``-pixel square windows of a ``size``-pixel square image whose corners
    step by ``stride`` pixels from the top-left window, row by row (the last row and column may stop short of the
    border); ``G = k²`` with ``k = (size - crop) // stride + 1``.

    Example:
        >>> theta = candidate_crops(84, 28, 28)  # the 3x3 tiling of an 84x84 image by 28x28 crops
        >>> theta.shape, theta[4]  # the middle one: (scale 1/3, the image centre)
        (torch.Size([9, 3]), tensor([0.3333, 0.0000, 0.0000]))
        >>> attention_boxes(theta[:1], (84, 84)).round()  # the top-left one, in pixel edges
        tensor([[ 0.,  0., 28., 28.]])
    """
    if not 0 < crop <= size or stride < 1:
        raise ValueError(f"need 0 < crop <= size and stride >= 1, got size {size}, crop {crop}, stride {stride}")
    centres = (torch.arange(0, size - crop + 1, stride) + crop / 2) * 2 / size - 1
    ty, tx = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([torch.full_like(tx, crop / size), tx, ty], dim=-1).reshape(-1, 3)


def expected_triplet_loss(close: Tensor, far: Tensor, margin: float = 1.0) -> Tensor:
    """The paper's hinge ``max(0, ||c - p||² - ||c - r||² + margin)`` of each candidate crop ``c``, averaged over
    every partner ``p`` and random crop ``r``, from the squared distances ``close`` ``(G, M)`` of the ``G``
    candidates to the ``M`` partners and ``far`` ``(G, R)`` to the ``R`` random crops: ``(G,)``."""
    return (close.unsqueeze(2) - far.unsqueeze(1) + margin).clamp(min=0).mean((1, 2))


def best_response(
    embeddings: Tensor, start: Tensor, margin: float = 1.0, rounds: int = 20, desc: str = "best response"
) -> tuple[list[Tensor], list[float]]:
    """Minimise the triplet loss over each image's candidate crops, one image at a time.

    Args:
        embeddings: ``(N, G, F)``: e() of the ``G`` candidate crops of each of ``N`` images (the random crops of
            an image are its candidates too).
        start: ``(N,)`` index of every image's first crop.
        rounds: sweeps at most; a sweep in which no image changes its crop ends the search.

    Returns:
        The choice ``(N,)`` after each sweep (the start first) and the mean loss of the choices after each sweep.
    """
    n = len(embeddings)
    if n < 2:
        raise ValueError(f"co-localisation needs at least 2 images, got {n}")
    # an image's random crops are its candidates, so its ||c - r||² are fixed: computed once
    far = torch.cdist(embeddings, embeddings).pow(2)  # (N, G, G)
    choice = start.clone()
    chosen = embeddings[torch.arange(n), choice]
    history, losses = [choice.clone()], []
    for _ in tqdm(range(rounds), desc=desc, leave=False, dynamic_ncols=True):
        total, changed = 0.0, False
        for i in range(n):
            others = torch.cat([chosen[:i], chosen[i + 1 :]])
            loss = expected_triplet_loss(torch.cdist(embeddings[i], others).pow(2), far[i], margin)
            best = int(loss.argmin())
            changed |= best != int(choice[i])
            choice[i], chosen[i] = best, embeddings[i, best]
            total += loss[best].item()
        history.append(choice.clone())
        losses.append(total / n)
        if not changed:
            break
    return history, losses


@torch.no_grad()
def _embed_candidates(images: Tensor, encoder: nn.Module, theta: Tensor, desc: str) -> Tensor:
    """e() of every candidate crop ``theta`` ``(G, 3)`` of every image: ``(N, G, F)``."""
    theta = theta.to(images.device)
    out = [
        encoder(stn.warp(image.expand(len(theta), -1, -1, -1), theta, "attention", (DIGIT_SIZE, DIGIT_SIZE)))
        for image in tqdm(images.unsqueeze(1), desc=desc, leave=False, dynamic_ncols=True)
    ]
    return torch.stack(out)


def fit_transformer(images: Tensor, theta: Tensor, steps: int, lr: float = 1e-3, seed: int = 0) -> SpatialTransformer:
    """A ``coloc-st`` trained (Adam, full batch) to crop ``theta`` ``(N, 3)`` (one scale) out of ``images``
    ``(N, C, H, W)`` by regression of its translation."""
    torch.manual_seed(seed)
    scale = theta[0, 0].item()
    st = create_model("coloc-st", in_shape=tuple(images.shape[1:]), scale=scale).to(images.device)
    optimizer = torch.optim.Adam(st.parameters(), lr=lr)
    target = theta[:, 1:].to(images.device)
    for _ in tqdm(range(steps), desc="fit transformer", leave=False, dynamic_ncols=True):
        loss = (st.localize(images)[:, 1:] - target).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return st.eval()


# --- one co-localisation -------------------------------------------------------------------------------------


@dataclass
class ColocalizationResult:
    """``theta`` ``(N, 3)``: the trained transformer's crops, ``iou`` ``(N,)`` theirs; ``history`` ``(S, N, 3)``:
    the best-response crops at the start and after each sweep, ``loss``: the mean triplet loss after each sweep;
    ``transformer``: the trained ``coloc-st``."""

    theta: Tensor
    iou: Tensor
    history: Tensor
    loss: list[float]
    transformer: SpatialTransformer

    @property
    def localised(self) -> float:
        """Fraction of digits with IoU above 0.5."""
        return fraction_localised(self.iou)


def fraction_localised(iou: Tensor) -> float:
    """Fraction of the IoUs ``(N,)`` above 0.5."""
    return (iou > IOU_THRESHOLD).float().mean().item()


def colocalize(
    images: Tensor,
    boxes: Tensor,
    encoder: nn.Module,
    *,
    stride: int = 4,
    rounds: int = 20,
    margin: float = 1.0,
    fit_steps: int = 500,
    fit_lr: float = 1e-3,
    seed: int = 0,
    desc: str = "co-localise",
) -> ColocalizationResult:
    """Find the common object of ``images`` ``(N, 1, H, W)`` (square) by best response on the triplet loss of
    ``encoder``'s embeddings of 28x28 crops (candidates ``stride`` px apart, at most ``rounds`` sweeps), train a
    ``coloc-st`` to take those crops (:func:`fit_transformer`), and score its crops against ``boxes`` ``(N, 4)``
    (used for nothing else)."""
    if images.dim() != 4 or images.shape[-1] != images.shape[-2] or images.shape[-1] < DIGIT_SIZE:
        raise ValueError(f"images must be square, (N, C, S, S) with S >= {DIGIT_SIZE}, got {tuple(images.shape)}")
    candidates = candidate_crops(images.shape[-1], DIGIT_SIZE, stride)
    embeddings = _embed_candidates(images, encoder, candidates, desc=f"{desc}: embed crops")
    centre = int(candidates[:, 1:].abs().sum(1).argmin())  # the crop nearest the image centre
    start = torch.full((len(images),), centre)
    history, losses = best_response(embeddings, start, margin, rounds, desc=f"{desc}: sweeps")
    found = candidates[history[-1]]
    st = fit_transformer(images, found, fit_steps, fit_lr, seed)
    with torch.no_grad():
        theta = st.localize(images).cpu()
    iou = box_iou(attention_boxes(theta, images.shape[-2:]), boxes.cpu())
    return ColocalizationResult(theta, iou, candidates[torch.stack(history)], losses, st)


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
    checkpoint = load_checkpoint(path)
    if tuple(checkpoint["model_kwargs"]["in_shape"])[-2:] != (DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(f"{path}: the encoder must take 28x28 digits, got {checkpoint['model_kwargs']}")
    model = build_model(checkpoint).eval()
    encoder = create_model("coloc-encoder", classifier=model).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    error = (checkpoint.get("history") or [{}])[-1].get("test_error")
    data = checkpoint.get("data", {}).get("variant", "unknown data")
    about = f"`{checkpoint['model_name']}` trained {checkpoint['step']} steps on {data}"
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
        sweeps = [(attention_boxes(t[:k], size), colormaps["autumn"](i / last)) for i, t in enumerate(result.history)]
        final, held = attention_boxes(result.theta[:k], size), attention_boxes(held_theta[:k], size)
        add_row(f"{name}: digit {digit}", images[:k], [(truth, "lime"), *sweeps, (final, "cyan")])
        add_row(f"{name}: held out", held_images[:k], [(held_truth, "lime"), (held, "cyan")])
    title = "truth green; best-response crops by sweep red -> yellow; the trained transformer's crop cyan"
    return image_rows(rows, path, title=title, boxes=boxes)


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
            held_iou = box_iou(attention_boxes(held_theta, images.shape[-2:]), boxes[n:])
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
