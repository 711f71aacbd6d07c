"""Table 3 of the paper: CUB-200-2011 bird classification accuracy, CNN vs 2x / 4x ST-CNN, attention boxes.

``stn reproduce table3 --cub-root DIR`` trains the four rows of the table on the user's copy of CUB-200-2011
(official layout, see :mod:`stn.data.cub`), scores the test split, writes ``table3.md`` beside the paper's
numbers and, for each ST-CNN, ``<run>/attention.png``: test images with the bird's box (dashed) and each
transformer's window. The table also reports how often a window's centre lies on the bird's box and the mean
fraction of each window covered by the box (the boxes are never used for training).

Rows (``--input-size`` S = 448 in the paper): the CNN sees the image at S/2; "2xST-CNN 224px" sees the image at
S/2 and samples S/2 crops from it (upsampling its half-size windows); "2x / 4xST-CNN 448px" see the image at S
and sample S/2 crops at full resolution. The localisation backbone always sees the image at S/2.

Recipe (ours where the paper is silent): an ImageNet-pretrained backbone from timm (``--backbone``, default
``inception_v3``; the paper's is Inception with batch norm), SGD with momentum 0.9, batch 32, learning rate 0.01
divided by 10 at 2/3 of training, weight decay 1e-4, random horizontal flips; the localisation net learns 1e-4
times slower than the rest (the paper trains it far slower). Budgets: ``quick`` 5 epochs, ``paper`` 50 epochs.
Finished runs (``<out>/<run>/result.json``) are skipped unless ``--force``.

Example (shell)::

    stn reproduce table3 --cub-root ~/data/CUB_200_2011 --budget quick
    stn reproduce table3 --cub-root shared/data/cub_200_2011_subset --backbone tiny --no-pretrained \\
        --input-size 64 --epochs 2 --out results/cub_smoke     # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from stn.data.cub import CUB200
from stn.engine.checkpoint import save_checkpoint
from stn.engine.metrics import format_markdown_table, write_text_atomic
from stn.engine.trainer import make_sgd, resolve_device, scheduled_step
from stn.models import create_model
from stn.models.cub import attention_boxes

__all__ = [
    "BUDGETS",
    "RUNS",
    "Budget",
    "Run",
    "add_arguments",
    "attention_stats",
    "draw_attention",
    "evaluate",
    "run",
    "train",
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


@dataclass(frozen=True)
class Budget:
    """How long and how each model trains."""

    epochs: int
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_milestones: tuple[float, ...] = (2 / 3,)
    localization_lr_scale: float = 1e-4


BUDGETS = {"quick": Budget(5), "paper": Budget(50)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``stn reproduce table3``."""
    parser.add_argument("--cub-root", required=True, type=Path, help="the CUB_200_2011 folder (or its parent)")
    parser.add_argument("--out", type=Path, default=Path("results/table3"), help="output folder")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS), help="rows of the table to run")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="quick", help="training length (default quick)")
    parser.add_argument("--backbone", default="inception_v3", help="built-in (tiny, resnet18) or a timm model name")
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="random initialisation")
    parser.add_argument("--input-size", type=int, default=448, help="S, the full input size (crops are S/2)")
    parser.add_argument("--epochs", type=int, help="override the budget's number of epochs")
    parser.add_argument("--batch-size", type=int, help="override the budget's batch size")
    parser.add_argument("--lr", type=float, help="override the budget's base learning rate")
    parser.add_argument("--loc-lr-scale", type=float, help="override the localisation nets' learning rate factor")
    parser.add_argument("--limit-train", type=int, help="use only N training images (evenly spaced over classes)")
    parser.add_argument("--limit-test", type=int, help="use only N test images (evenly spaced over classes)")
    parser.add_argument("--figure-images", type=int, default=8, help="test images (evenly spaced) in each figure")
    parser.add_argument("--workers", type=int, default=4, help="data loading processes")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="retrain runs that already have a result")
    parser.add_argument("--save-models", action="store_true", help="also save each trained model as model.pt")


def run(args: argparse.Namespace) -> int:
    """Train and score the selected rows; write ``<out>/table3.md`` and the attention figures."""
    overrides = dict(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, localization_lr_scale=args.loc_lr_scale
    )
    budget = Budget(**{**asdict(BUDGETS[args.budget]), **{k: v for k, v in overrides.items() if v is not None}})
    if args.input_size < 2 or args.input_size % 2:
        raise ValueError(f"--input-size must be an even number of pixels, got {args.input_size}")
    device = resolve_device(args.device)
    half = args.input_size // 2
    for key in args.runs:
        spec = RUNS[key]
        result_path = Path(args.out) / key / "result.json"
        if result_path.is_file() and not args.force:
            print(f"{spec.label}: done before, see {result_path}")
            continue
        size = args.input_size if spec.full_resolution else half
        train_set = CUB200(args.cub_root, "train", image_size=size, limit=args.limit_train)
        test_set = CUB200(args.cub_root, "test", image_size=size, limit=args.limit_test)
        options = dict(num_classes=train_set.num_classes, backbone=args.backbone, pretrained=args.pretrained)
        if spec.model != "cub-cnn":
            options.update(crop_size=half, loc_size=half)
        torch.manual_seed(args.seed)
        model = create_model(spec.model, **options).to(device)
        start = time.perf_counter()
        losses = train(model, train_set, budget, device, workers=args.workers, seed=args.seed, desc=spec.label)
        seconds = time.perf_counter() - start
        accuracy, theta = evaluate(model, test_set, device, workers=args.workers)
        result = {
            "run": key,
            "label": spec.label,
            "accuracy": 100 * accuracy,
            "test_images": len(test_set),
            "train_images": len(train_set),
            "classes": train_set.num_classes,
            "image_size": size,
            "model": spec.model,
            **options,
            "params": sum(p.numel() for p in model.parameters()),
            "train_seconds": seconds,
            "budget": args.budget,
            **asdict(budget),
            "seed": args.seed,
            "device": str(device),
        }
        if theta is not None:
            result.update(attention_stats(theta, test_set.boxes))
            shown = torch.linspace(0, len(test_set) - 1, min(args.figure_images, len(test_set))).round().long()
            images = torch.stack([test_set[int(i)][0] for i in shown])
            windows = attention_boxes(theta[shown])
            draw_attention(images, test_set.boxes[shown], windows, result_path.parent / "attention.png")
        if args.save_models:
            checkpoint = {"config": result, "model_name": spec.model, "model_kwargs": options, "step": len(losses)}
            save_checkpoint({**checkpoint, "model": model.state_dict()}, result_path.with_name("model.pt"))
        write_text_atomic(result_path, json.dumps(result, indent=2) + "\n")
        print(f"{spec.label}: accuracy {100 * accuracy:.2f}% on {len(test_set)} test images")
    print(f"wrote {write_table(args.out)}")
    return 0


def train(
    model: torch.nn.Module,
    dataset: CUB200,
    budget: Budget,
    device: torch.device,
    *,
    workers: int = 0,
    seed: int = 0,
    desc: str = "train",
) -> list[float]:
    """SGD over shuffled, randomly flipped batches for ``budget.epochs`` epochs; returns each step's loss."""
    optimizer = make_sgd(
        model,
        lr=budget.lr,
        momentum=budget.momentum,
        weight_decay=budget.weight_decay,
        localization_lr_scale=budget.localization_lr_scale,
    )
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset, budget.batch_size, shuffle=True, num_workers=workers, generator=generator, drop_last=True
    )
    losses = []
    model.train()
    for epoch in range(budget.epochs):
        for images, labels in tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{budget.epochs}", unit="batch"):
            flip = torch.rand(len(images), generator=generator) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images).to(device)
            loss = F.cross_entropy(model(images), labels.to(device))
            scheduled_step(loss, optimizer, epoch, budget.epochs, budget.lr_milestones)  # the rate moves per epoch
            losses.append(loss.item())
    return losses


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, dataset: CUB200, device: torch.device, *, workers: int = 0, batch_size: int = 64
) -> tuple[float, Tensor | None]:
    """Test accuracy, and the θ ``(N, T, 3)`` of every test image for an ST-CNN (None for the CNN)."""
    model.eval()
    correct, thetas = 0, []
    has_theta = getattr(model, "transformer", None) is not None
    for images, labels in DataLoader(dataset, batch_size, num_workers=workers):
        images = images.to(device)
        if has_theta:
            logits, theta = model(images, return_theta=True)
            thetas.append(theta.cpu())
        else:
            logits = model(images)
        correct += int((logits.argmax(1).cpu() == labels).sum())
    return correct / max(len(dataset), 1), torch.cat(thetas) if has_theta else None


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
        init = "ImageNet" if r["pretrained"] else "random init"
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
    return write_text_atomic(out / "table3.md", text)


# --- attention boxes (pure functions and the figure) -----------------------------------------------------------


def attention_stats(theta: Tensor, boxes: Tensor) -> dict[str, float | list[float]]:
    """How the attention windows of θ ``(N, T, 3)`` sit on the ground-truth boxes ``(N, 4)`` (normalised
    ``(x0, y0, x1, y1)``): ``centre_in_box`` (share of windows whose centre is in the box), ``window_on_box``
    (mean share of a window's area inside the box), and both per transformer (``..._per_transformer``)."""
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=80)
    os.replace(tmp, path)
    return path
