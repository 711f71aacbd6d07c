"""Table 2 of the paper: sequence error on SVHN multi-digit recognition, CNN vs ST-CNN Single vs ST-CNN Multi.

``stn reproduce table2 --svhn-root DIR [--crop 64|128] [--budget quick|paper]`` trains each model on the user's
copy of SVHN format 1 (``DIR/train``, ``DIR/extra``, ``DIR/test``), scores the test set and writes ``table2.md``
with our numbers beside the paper's. Finished models (``<out>/<crop>px/<model>/result.json``) are skipped, so a
second call with the other ``--crop`` fills the other column of the same table. The first call on a split
preprocesses and caches its crops (see :class:`stn.data.svhn.SVHNSequences`); ``--save-models`` also keeps each
trained model as ``model.pt`` (an ``stn`` checkpoint, loadable with :func:`stn.engine.checkpoint.load_model`).

Recipe (ours where the paper is silent): SGD with momentum 0.9, batch 128, base learning rate 0.01 divided by 10
at 1/2 and 3/4 of training, weight decay 5e-4, localisation nets at 1/10 of the base rate (the paper), random
54x54 (108x108) crops of the 64 (128) px images for training and the central crop for testing (Goodfellow et al.).
Budgets: ``quick`` trains 5,000 steps on ``train`` only (a first look, minutes on a GPU); ``paper`` trains
150,000 steps on ``train`` + ``extra``. A sequence counts as wrong if any of its 5 positions is wrong.

Example (shell)::

    stn reproduce table2 --svhn-root ~/data/svhn --crop 64 --budget quick
    stn reproduce table2 --svhn-root ~/data/svhn --crop 128 --budget quick   # fills the 128px column
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from stn.data.svhn import INPUT_SIZE, SVHNSequences, center_crops, random_crops
from stn.engine.checkpoint import save_checkpoint
from stn.engine.metrics import format_markdown_table
from stn.engine.trainer import make_sgd, resolve_device, scheduled_step
from stn.io import write_text_atomic
from stn.models import create_model
from stn.models.svhn import sequence_errors, sequence_loss

__all__ = [
    "BUDGETS",
    "MODELS",
    "PAPER",
    "Budget",
    "add_arguments",
    "evaluate",
    "run",
    "train",
    "write_table",
]

# Sequence error (%) reported in the paper, (64px, 128px).
PAPER = {"CNN": (4.0, 5.6), "DRAM": (3.9, 4.5), "ST-CNN Single": (3.7, 3.9), "ST-CNN Multi": (3.6, 3.9)}
# --models key -> (row of the table, registered model)
MODELS = {
    "cnn": ("CNN", "svhn-cnn"),
    "single": ("ST-CNN Single", "svhn-st-cnn-single"),
    "multi": ("ST-CNN Multi", "svhn-st-cnn-multi"),
}


@dataclass(frozen=True)
class Budget:
    """How long and on what each model trains."""

    iterations: int
    splits: tuple[str, ...]
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: tuple[float, ...] = (0.5, 0.75)
    localization_lr_scale: float = 0.1


BUDGETS = {"quick": Budget(5_000, ("train",)), "paper": Budget(150_000, ("train", "extra"))}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``stn reproduce table2``."""
    parser.add_argument("--svhn-root", required=True, type=Path, help="folder with train/, extra/, test/ (format 1)")
    parser.add_argument("--crop", type=int, choices=sorted(INPUT_SIZE), default=64, help="64 (tight) or 128 (loose)")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="quick", help="training length (default quick)")
    parser.add_argument("--out", type=Path, default=Path("results/table2"), help="output folder")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="models to run")
    parser.add_argument("--iterations", type=int, help="override the budget's number of training steps")
    parser.add_argument("--batch-size", type=int, help="override the budget's batch size")
    parser.add_argument("--cache-dir", type=Path, help="where preprocessed arrays are cached")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="retrain models that already have a result")
    parser.add_argument("--save-models", action="store_true", help="also save each trained model as model.pt")


def run(args: argparse.Namespace) -> int:
    """Train and score the selected models; write ``<out>/table2.md``. Returns the exit code."""
    budget = BUDGETS[args.budget]
    overrides = {k: v for k, v in (("iterations", args.iterations), ("batch_size", args.batch_size)) if v}
    budget = Budget(**{**asdict(budget), **overrides})
    device = resolve_device(args.device)
    data = dict(cache_dir=args.cache_dir, crop=args.crop)
    train_sets = [SVHNSequences(args.svhn_root, split, **data) for split in budget.splits]
    test_set = SVHNSequences(args.svhn_root, "test", **data)
    folder = Path(args.out) / f"{args.crop}px"
    for key in args.models:
        label, name = MODELS[key]
        result_path = folder / key / "result.json"
        if result_path.is_file() and not args.force:
            print(f"{label} ({args.crop}px): done before, see {result_path}")
            continue
        torch.manual_seed(args.seed)
        in_shape = (3, INPUT_SIZE[args.crop], INPUT_SIZE[args.crop])
        model = create_model(name, in_shape=in_shape).to(device)
        start = time.perf_counter()
        train(model, train_sets, budget, INPUT_SIZE[args.crop], device, seed=args.seed, desc=label)
        seconds = time.perf_counter() - start
        error = evaluate(model, test_set, INPUT_SIZE[args.crop], device)
        result = {
            "model": label,
            "crop": args.crop,
            "sequence_error": 100 * error,
            "test_images": len(test_set),
            "params": sum(p.numel() for p in model.parameters()),
            "train_seconds": seconds,
            "budget": args.budget,
            **asdict(budget),
            "seed": args.seed,
            "device": str(device),
        }
        if args.save_models:
            save_checkpoint(
                {
                    "config": result,
                    "model_name": name,
                    "step": budget.iterations,
                    "model": model.state_dict(),
                    "model_kwargs": {"in_shape": list(in_shape)},
                },
                result_path.with_name("model.pt"),
            )
        write_text_atomic(result_path, json.dumps(result, indent=2) + "\n")
        print(f"{label} ({args.crop}px): sequence error {100 * error:.2f}% on {len(test_set)} test images")
    table = write_table(args.out)
    print(f"wrote {table}")
    return 0


def _read_batch(datasets: list[SVHNSequences], indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and labels of global ``indices`` into the concatenation of ``datasets``."""
    offsets = np.cumsum([0] + [len(d) for d in datasets])
    images, labels, order = [], [], []
    for i, dataset in enumerate(datasets):
        mask = (indices >= offsets[i]) & (indices < offsets[i + 1])
        if mask.any():
            batch = dataset.batch(indices[mask] - int(offsets[i]))
            images.append(batch[0])
            labels.append(batch[1])
            order.append(mask.nonzero().flatten())
    restore = torch.argsort(torch.cat(order))
    return torch.cat(images)[restore], torch.cat(labels)[restore]


def train(
    model: torch.nn.Module,
    datasets: list[SVHNSequences],
    budget: Budget,
    input_size: int,
    device: torch.device,
    *,
    seed: int = 0,
    desc: str = "train",
) -> list[float]:
    """SGD on random crops of shuffled batches for ``budget.iterations`` steps; returns the loss of each step."""
    optimizer = make_sgd(
        model,
        lr=budget.lr,
        momentum=budget.momentum,
        weight_decay=budget.weight_decay,
        localization_lr_scale=budget.localization_lr_scale,
    )
    generator = torch.Generator().manual_seed(seed)
    total = sum(len(d) for d in datasets)
    order, position, losses = torch.randperm(total, generator=generator), 0, []
    model.train()
    for step in tqdm(range(budget.iterations), desc=desc, unit="step"):
        if position + budget.batch_size > total:
            order, position = torch.randperm(total, generator=generator), 0
        images, labels = _read_batch(datasets, order[position : position + budget.batch_size])
        position += budget.batch_size
        x = random_crops(images, input_size, generator).to(device).float().div_(255)
        loss = sequence_loss(model(x), labels.to(device))
        scheduled_step(loss, optimizer, step, budget.iterations, budget.lr_milestones)
        losses.append(loss.item())
    return losses


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: SVHNSequences, input_size: int, device: torch.device) -> float:
    """Fraction of test sequences with any position wrong, on central crops."""
    model.eval()
    wrong = 0
    for start in range(0, len(dataset), 512):
        images, labels = dataset.batch(range(start, min(start + 512, len(dataset))))
        x = center_crops(images, input_size).to(device).float().div_(255)
        wrong += int(sequence_errors(model(x), labels.to(device)).sum())
    return wrong / max(len(dataset), 1)


def write_table(out: str | Path) -> Path:
    """``<out>/table2.md``: our sequence errors (from the results found) beside the paper's."""
    out = Path(out)
    keys = {label: key for key, (label, _) in MODELS.items()}
    rows = []
    for label, paper in PAPER.items():
        ours, notes = [], []
        for crop in sorted(INPUT_SIZE):
            path = out / f"{crop}px" / keys.get(label, "-") / "result.json"
            result = json.loads(path.read_text()) if path.is_file() else None
            ours.append(f"{result['sequence_error']:.2f}" if result else "—")
            if result:
                minutes = result["train_seconds"] / 60
                notes.append(
                    f"{crop}px: {result['budget']} budget, {result['iterations']} steps, {result['params']:,} params, "
                    f"{minutes:.1f} min on {result['device']}"
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
    return write_text_atomic(out / "table2.md", text)
