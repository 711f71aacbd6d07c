"""Co-localisation (appendix, Table 5): an attention transformer trained with a triplet loss to find the digits.

The task: find the common object of a set of images with no labels and no boxes, only a triplet loss on the
crops an attention transformer takes.

For one digit class at a time, 100 images of 84x84 hold one 28x28 digit of that class at a uniform random
place (**T**), or that plus sixteen random 6x6 crops of other digits as clutter (**TC**) — the data layer's
``coloc`` / ``coloc-tc`` variants, made from the MNIST *test* split (the encoder trains on the training split).
An attention transformer (``coloc-st``: θ = scale, translation) crops a 28x28 window I_n^T out of each image,
and is trained with the paper's hinge loss

    sum_n max(0, ||e(I_n^T) - e(I_m^T)||² - ||e(I_n^T) - e(I_n^rand)||² + α),   α = 1,

over random pairs ``(n, m)``, ``m != n``, where ``I_n^rand`` is a random crop of ``I_n`` and ``e``
(``coloc-encoder``) concatenates the activations of the two hidden layers and the logits of the Table 1 CNN
trained to classify digits (here: on the undistorted MNIST training digits, SGD with momentum; or any 28x28
classifier checkpoint given with ``--encoder``). The transformer is trained with SGD with momentum.

Our choices where the paper is silent:

* the random crop has the scale of the transformer's current crop of that image, at a uniformly random
  position inside the image;
* each layer's activations are scaled to unit norm before concatenation (on raw activations the distance
  between two digits of one class is about that between a digit and empty background, and the loss is then
  smallest for crops of empty background);
* the crop's scale is clamped to ``[0.2, 1]`` and its centre kept inside the image (unbounded, it grows past
  the image or flies off it, and the crops become identical empty padding).

A digit counts as localised when the transformer's crop box overlaps the 28x28 box the digit was placed in with
an intersection over union above 0.5; the paper reports 100% on T and 75-93% on TC (depending on the class).
``stn reproduce colocalization`` writes ``colocalization.md`` (per class, T and TC) and ``boxes.png`` (the
crop boxes over training on a few images of the first class).

Example (shell)::

    stn reproduce colocalization --budget quick --digits 0 8 --data-dir ~/data/mnist
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib import colormaps
from torch import Tensor, nn
from tqdm.auto import tqdm

import stn
from stn.data import GENERATORS, MNIST, load_mnist
from stn.data.datasets import block_seed
from stn.engine.checkpoint import build_model, load_checkpoint, save_checkpoint
from stn.engine.metrics import format_markdown_table, write_text_atomic
from stn.engine.trainer import evaluate, resolve_device
from stn.experiments._appendix import add_common_arguments, budget_from_args, image_rows
from stn.models import create_model
from stn.models.appendix import ActivationEncoder

__all__ = [
    "BUDGETS",
    "DATASETS",
    "Budget",
    "ColocalizationResult",
    "add_arguments",
    "attention_boxes",
    "box_iou",
    "colocalization_set",
    "colocalize",
    "random_crops",
    "run",
    "train_encoder",
    "triplet_loss",
]

# table column -> data-layer variant
DATASETS = {"T": "coloc", "TC": "coloc-tc"}
PAPER = {"T": "100", "TC": "75-93"}
DIGIT_SIZE = 28
IOU_THRESHOLD = 0.5
_SNAPSHOTS = 5  # θ snapshots kept over training for the figure
_FIGURE_IMAGES = 8


@dataclass(frozen=True)
class Budget:
    """Training lengths: the digit encoder (a Table 1 CNN, by the training engine) and each co-localisation."""

    encoder_iterations: int
    steps: int
    batch_size: int = 50  # anchors n per step (each with a random partner m and a random crop)
    lr: float = 0.01
    momentum: float = 0.9
    margin: float = 1.0
    num_images: int = 100
    encoder_batch_size: int = 128
    encoder_lr: float = 0.05
    digits: tuple[int, ...] = tuple(range(10))  # classes co-localised when --digits is not given


BUDGETS = {
    "quick": Budget(encoder_iterations=200, steps=50, batch_size=20, digits=(1, 4, 8)),
    "paper": Budget(encoder_iterations=10_000, steps=2_000),
}


# --- boxes and losses ----------------------------------------------------------------------------------------


def attention_boxes(theta: Tensor, size: Sequence[int]) -> Tensor:
    """The input region an attention θ ``(N, 3)`` = ``(s, tx, ty)`` crops, as ``(N, 4)`` ``(x0, y0, x1, y1)``
    pixel edges of an input of ``size`` ``(H, W)``: normalised ``[t - s, t + s]`` per axis."""
    height, width = size
    s, tx, ty = theta.unbind(1)
    return torch.stack(
        [(tx - s + 1) * width / 2, (ty - s + 1) * height / 2, (tx + s + 1) * width / 2, (ty + s + 1) * height / 2],
        dim=1,
    )


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of paired boxes ``(N, 4)`` ``(x0, y0, x1, y1)``: ``(N,)``."""
    wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area - inter).clamp(min=1e-12)


def triplet_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0) -> Tensor:
    """Mean of ``max(0, ||a - p||² - ||a - n||² + margin)`` over the rows of the embeddings ``(N, F)``."""
    close = (anchor - positive).pow(2).sum(1)
    far = (anchor - negative).pow(2).sum(1)
    return (close - far + margin).clamp(min=0).mean()


def random_crops(theta: Tensor, generator: torch.Generator) -> Tensor:
    """Attention θ ``(N, 3)`` of crops with the scales of ``theta`` ``(N, 3)`` (clamped to 1) at uniformly random
    positions inside the image."""
    s = theta[:, 0].detach().clamp(max=1.0)
    u = torch.rand(len(s), 2, generator=generator).to(s) * 2 - 1
    return torch.cat([s.unsqueeze(1), u * (1 - s).unsqueeze(1)], dim=1)


# --- data ----------------------------------------------------------------------------------------------------


def colocalization_set(
    mnist: MNIST, digit: int, variant: str = "coloc", count: int = 100, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """``count`` images of class ``digit`` from ``mnist``'s split: ``images (N, 1, 84, 84)`` and the boxes
    ``(N, 4)`` (pixel edges) of the 28x28 frames the digits were placed in.

    Args:
        variant: ``"coloc"`` (T) or ``"coloc-tc"`` (TC, clutter from other digits of the same split).
    """
    if variant not in DATASETS.values():
        raise ValueError(f"variant must be one of {sorted(DATASETS.values())}, got {variant!r}")
    generator = torch.Generator().manual_seed(block_seed("colocalization", variant, digit, seed))
    (candidates,) = torch.nonzero(mnist.labels == digit, as_tuple=True)
    if len(candidates) < count:
        raise ValueError(f"the {mnist.split} split has {len(candidates)} digits of class {digit}, {count} needed")
    index = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
    options = {"clutter_pool": mnist.images, "exclude": index} if variant == "coloc-tc" else {}
    images, params = GENERATORS[variant](mnist.images[index], generator, **options)
    centre = torch.tensor([images.shape[-1], images.shape[-2]]) / 2 + params["offset"]
    half = mnist.images.shape[-1] / 2
    return images, torch.cat([centre - half, centre + half], dim=1)


# --- one co-localisation -------------------------------------------------------------------------------------


@dataclass
class ColocalizationResult:
    """``theta`` ``(N, 3)`` final crops, ``iou`` ``(N,)``, ``history`` ``(S, N, 3)`` θ over training, ``steps``
    at which they were taken, ``loss`` per step."""

    theta: Tensor
    iou: Tensor
    history: Tensor
    steps: list[int]
    loss: list[float]

    @property
    def localised(self) -> float:
        """Fraction of digits with IoU above 0.5."""
        return (self.iou > IOU_THRESHOLD).float().mean().item()


def colocalize(
    images: Tensor, boxes: Tensor, encoder: nn.Module, budget: Budget, seed: int = 0, desc: str = "co-localise"
) -> ColocalizationResult:
    """Train a fresh ``coloc-st`` on ``images`` ``(N, 1, H, W)`` with the triplet loss on ``encoder``'s
    embeddings (frozen); score its crops against ``boxes`` ``(N, 4)``."""
    device = images.device
    n = len(images)
    if n < 2:
        raise ValueError(f"co-localisation needs at least 2 images, got {n}")
    torch.manual_seed(seed)
    st = create_model("coloc-st", in_shape=tuple(images.shape[1:])).to(device)
    optimizer = torch.optim.SGD(st.parameters(), lr=budget.lr, momentum=budget.momentum)
    generator = torch.Generator().manual_seed(block_seed("triplets", seed))
    batch = min(budget.batch_size, n)
    snapshot_steps = sorted({round(i * budget.steps / (_SNAPSHOTS - 1)) for i in range(_SNAPSHOTS)})
    history, losses = [], []
    for step in tqdm(range(budget.steps + 1), desc=desc, leave=False, dynamic_ncols=True):
        if step in snapshot_steps:
            with torch.no_grad():
                history.append(st.localize(images).cpu())
        if step == budget.steps:
            break
        anchor = torch.randperm(n, generator=generator)[:batch]
        partner = (anchor + torch.randint(1, n, (batch,), generator=generator)) % n  # any image but the anchor
        used = torch.cat([anchor, partner]).to(device)
        crops, theta = st(images[used], return_theta=True)
        rand_theta = random_crops(theta[:batch], generator)
        rand_crops = stn.warp(images[anchor.to(device)], rand_theta, st.transform, crops.shape[-2:])
        e_anchor, e_partner, e_rand = encoder(torch.cat([crops, rand_crops])).split(batch)
        loss = triplet_loss(e_anchor, e_partner, e_rand, budget.margin)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    theta = history[-1]
    iou = box_iou(attention_boxes(theta, images.shape[-2:]), boxes.cpu())
    return ColocalizationResult(theta, iou, torch.stack(history), snapshot_steps, losses)


# --- the experiment ------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``stn reproduce colocalization``."""
    add_common_arguments(parser, BUDGETS, "results/colocalization")
    parser.add_argument(
        "--digits",
        type=int,
        nargs="+",
        default=None,
        choices=range(10),
        metavar="D",
        help="digit classes to co-localise (default: all ten; 1, 4 and 8 with the quick budget)",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=list(DATASETS),
        default=list(DATASETS),
        help="T (no clutter) and/or TC (clutter)",
    )
    parser.add_argument(
        "--encoder",
        type=Path,
        help="checkpoint of a digit classifier (from `stn train "
        "--model cnn` on a 28x28 variant) to use as e() instead of training one",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs/colocalization"),
        help="where the trained encoder (encoder.pt) is kept for later runs (default runs/colocalization)",
    )
    parser.add_argument("--steps", type=int, help="override the budget's co-localisation steps")
    parser.add_argument("--encoder-iterations", type=int, help="override the budget's encoder training steps")
    parser.add_argument("--lr", type=float, help="override the budget's co-localisation learning rate")
    parser.add_argument("--num-images", type=int, help="images per class and dataset (default 100, as the paper)")


def train_encoder(
    mnist: MNIST, budget: Budget, device: torch.device, seed: int = 0, test: MNIST | None = None
) -> tuple[nn.Module, dict]:
    """Train the Table 1 CNN to classify the (undistorted) digits of ``mnist``: SGD with momentum, constant rate.

    Returns:
        The model and a checkpoint dict (loadable with :func:`stn.engine.checkpoint.load_model`) holding its
        test error on the first 2,000 digits of ``test`` when given.
    """
    torch.manual_seed(seed)
    model = create_model("cnn").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=budget.encoder_lr, momentum=budget.momentum)
    generator = torch.Generator().manual_seed(block_seed("encoder", seed))
    images = mnist.images.unsqueeze(1)
    for _ in tqdm(range(budget.encoder_iterations), desc="digit encoder", leave=False, dynamic_ncols=True):
        idx = torch.randint(0, len(images), (budget.encoder_batch_size,), generator=generator)
        x, y = images[idx].to(device).float().div(255), mnist.labels[idx].to(device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    history = []
    if test is not None:
        x, y = test.images[:2000].unsqueeze(1).to(device).float().div(255), test.labels[:2000].to(device)
        _, error = evaluate(model, x, y)
        history.append({"test_error": error})
    config = {
        "data": f"undistorted {mnist.source} {mnist.split}",
        "lr": budget.encoder_lr,
        "batch_size": budget.encoder_batch_size,
        "seed": seed,
    }
    checkpoint = {
        "config": config,
        "model_name": "cnn",
        "model_kwargs": {"in_shape": [1, DIGIT_SIZE, DIGIT_SIZE]},
        "model": model.state_dict(),
        "step": budget.encoder_iterations,
        "history": history,
    }
    return model.eval(), checkpoint


def _encoder(args: argparse.Namespace, budget: Budget, device: torch.device) -> tuple[ActivationEncoder, str]:
    """e(): from ``--encoder``, else from ``<runs-dir>/encoder.pt`` when it has the budget's steps, else trained."""
    path = args.encoder or Path(args.runs_dir) / "encoder.pt"
    checkpoint = load_checkpoint(path) if Path(path).is_file() else None
    if args.encoder is None and (checkpoint is None or checkpoint["step"] != budget.encoder_iterations):
        train_set, test_set = (load_mnist(args.data_dir, split) for split in ("train", "test"))
        _, checkpoint = train_encoder(train_set, budget, device, args.seed, test_set)
        save_checkpoint(checkpoint, path)
    model = build_model(checkpoint).to(device).eval()
    if tuple(checkpoint["model_kwargs"]["in_shape"])[-2:] != (DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(f"{path}: the encoder must take 28x28 digits, got {checkpoint['model_kwargs']}")
    encoder = create_model("coloc-encoder", classifier=model).to(device).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    error = (checkpoint.get("history") or [{}])[-1].get("test_error")
    about = f"`{checkpoint['model_name']}` trained {checkpoint['step']} steps on {checkpoint['config']['data']}"
    return encoder, about + (f" (test error {100 * error:.2f}%)" if error is not None else "")


def _plot_boxes(results: dict[str, tuple[Tensor, Tensor, ColocalizationResult]], digit: int, path: Path) -> Path:
    """Per dataset a row of images with the truth (green) and the crop at each snapshot (early -> late colours)."""
    cmap = colormaps["autumn"]
    rows, boxes = [], {}
    for r, (name, (images, truth, result)) in enumerate(results.items()):
        k = min(_FIGURE_IMAGES, len(images))
        rows.append((f"{name}: digit {digit}", images[:k, 0]))
        size = images.shape[-2:]
        per_step = [attention_boxes(theta[:k], size) for theta in result.history]
        colours = [cmap(i / max(len(per_step) - 1, 1)) for i in range(len(per_step))]
        boxes[r] = [
            [(tuple(truth[j].tolist()), "lime")] + [(tuple(b[j].tolist()), c) for b, c in zip(per_step, colours)]
            for j in range(k)
        ]
    steps = results[next(iter(results))][2].steps
    title = f"crops over training (steps {steps}: red -> yellow), truth in green"
    return image_rows(rows, path, title=title, boxes=boxes)


def run(args: argparse.Namespace) -> int:
    """Co-localise every selected digit class on T and TC; write ``<out>/colocalization.md``, ``results.json`` and
    ``boxes.png``."""
    budget = budget_from_args(BUDGETS, args, ["steps", "encoder_iterations", "lr", "num_images"])
    device = resolve_device(args.device)
    out = Path(args.out)
    start = time.perf_counter()
    encoder, about = _encoder(args, budget, device)
    test = load_mnist(args.data_dir, "test")
    localised: dict[int, dict[str, float]] = {}
    mean_iou: dict[int, dict[str, float]] = {}
    digits = tuple(args.digits) if args.digits else budget.digits
    for digit in digits:
        runs = {}
        for name in args.datasets:
            images, boxes = colocalization_set(test, digit, DATASETS[name], budget.num_images, args.seed)
            result = colocalize(images.to(device), boxes, encoder, budget, args.seed, desc=f"{name} digit {digit}")
            runs[name] = (images, boxes, result)
            localised.setdefault(digit, {})[name] = 100 * result.localised
            mean_iou.setdefault(digit, {})[name] = result.iou.mean().item()
            print(
                f"digit {digit} {name}: {100 * result.localised:.0f}% localised (mean IoU "
                f"{result.iou.mean():.2f}, final loss {result.loss[-1]:.3f})"
            )
        if digit == digits[0]:
            _plot_boxes(runs, digit, out / "boxes.png")
    header = ["digit"] + [f"{name} ours (%)" for name in args.datasets] + [f"{name} mean IoU" for name in args.datasets]
    rows = [
        [d] + [f"{localised[d][n]:.0f}" for n in args.datasets] + [f"{mean_iou[d][n]:.2f}" for n in args.datasets]
        for d in digits
    ]
    paper = ", ".join(f"{n} {PAPER[n]}%" for n in args.datasets)
    text = (
        "# Co-localisation (appendix, Table 5)\n\n"
        f"Percentage of the {budget.num_images} digits per class whose crop has IoU > {IOU_THRESHOLD} with the "
        f"truth. Paper: {paper}. Encoder: {about}. {budget.steps} co-localisation steps of {budget.batch_size} "
        f"triplets per class and dataset (budget `{args.budget}`, seed {args.seed}, device {device}, "
        f"{time.perf_counter() - start:.0f} s in all).\n\n"
        f"{format_markdown_table(rows, header)}\n![crops over training](boxes.png)\n"
    )
    write_text_atomic(out / "colocalization.md", text)
    record = {
        "localised_percent": localised,
        "mean_iou": mean_iou,
        "encoder": about,
        "budget": args.budget,
        **asdict(budget),
        "seed": args.seed,
        "device": str(device),
    }
    write_text_atomic(out / "results.json", json.dumps(record, indent=2) + "\n")
    print(f"wrote {out / 'colocalization.md'}")
    return 0
