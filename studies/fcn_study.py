"""Why the FCN family learns so slowly (issue #12, item 3): our FCN against a from-scratch PyTorch MLP, then the
recipe changes one at a time, on the same data, steps and seed.

Every arm trains with the same deliberately plain loop (not the library's engine, so that the comparison with
the from-scratch MLP is independent of it): SGD with momentum 0.9, batch 256, the training digits of MNIST with
fresh distortions every epoch (``stn.data.DistortedMNIST``), scored on the fixed 10,000-digit distorted test set.

* ``quick``: the Table 1 quick recipe (lr 0.03, x0.1 at 1/3 and 2/3 of training);
* ``cosine``: Nesterov, 5% linear warm-up, then cosine decay to 0, at the given peak lr;
* ``std``: the model built with ``standardize=True`` (:class:`stn.models.mnist.Standardize` in front of the
  localisation net and the classifier; the sampler still reads the raw image).

Run (about 15 minutes on 2 cores)::

    python studies/fcn_study.py --data-dir ../shared/data/mnist --out results/fcn-study

``--smoke`` runs two tiny arms on 512 digits (used by the test suite).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stn.data import DistortedMNIST
from stn.io import format_markdown_table, write_text_atomic
from stn.models import create_model

BATCH = 256
# (name, model, standardize, schedule, peak lr); "plain-mlp" is the from-scratch MLP of the FCN's widths.
ARMS: list[tuple[str, str, bool, str, float]] = [
    ("plain-mlp", "plain-mlp", False, "quick", 0.03),
    ("fcn", "fcn", False, "quick", 0.03),
    ("fcn std", "fcn", True, "quick", 0.03),
    ("fcn cosine 0.1", "fcn", False, "cosine", 0.1),
    ("fcn std cosine 0.1", "fcn", True, "cosine", 0.1),
    ("st-fcn-aff", "st-fcn-aff", False, "quick", 0.03),
    ("st-fcn-aff std cosine 0.03", "st-fcn-aff", True, "cosine", 0.03),
    ("st-fcn-tps", "st-fcn-tps", False, "quick", 0.03),
    ("st-fcn-tps std cosine 0.03", "st-fcn-tps", True, "cosine", 0.03),
]


def schedule(kind: str, steps: int) -> Callable[[int], float]:
    """Learning-rate factor at each step."""
    if kind == "quick":
        return lambda s: 0.1 ** sum(s >= round(m * steps) for m in (1 / 3, 2 / 3))
    warmup = max(1, round(0.05 * steps))
    return lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps))


def plain_mlp(in_features: int, hidden: int, classes: int = 10) -> nn.Module:
    """The FCN's architecture written from scratch (three linear layers, ReLU)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def build(name: str, standardize: bool, shape: tuple[int, ...], seed: int) -> nn.Module:
    """The arm's model, initialised from ``seed`` (the from-scratch MLP takes the FCN's widths)."""
    if name != "plain-mlp":
        return create_model(name, seed=seed, in_shape=shape, standardize=standardize)
    hidden = create_model("fcn", in_shape=shape).classifier[1].out_features
    torch.manual_seed(seed)
    return plain_mlp(math.prod(shape), hidden)


def train_arm(model: nn.Module, train: DistortedMNIST, test: tuple, steps: int, kind: str, lr: float, seed: int):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=kind == "cosine")
    factor = schedule(kind, steps)
    per_epoch = len(train) // BATCH
    step = 0
    while step < steps:
        epoch = step // per_epoch
        x, y = train.epoch_tensors(epoch)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        for i in range(min(per_epoch, steps - step)):
            for group in optimizer.param_groups:
                group["lr"] = lr * factor(step)
            idx = order[i * BATCH : (i + 1) * BATCH]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    model.eval()
    images, labels = test
    with torch.no_grad():
        wrong = sum(
            (model(images[i : i + 1000]).argmax(1) != labels[i : i + 1000]).sum().item()
            for i in range(0, len(images), 1000)
        )
    return wrong / len(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with the four MNIST files")
    parser.add_argument("--out", type=Path, required=True, help="output folder (fcn_study.md, results.json)")
    parser.add_argument("--variants", nargs="+", default=["r", "rts"], choices=["r", "rts"])
    parser.add_argument("--steps", type=int, default=1000, help="SGD steps per arm (default 1000, the quick budget)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="two arms, 512 digits, 8 steps")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    torch.set_num_threads(1)  # one thread: the same numbers on any machine with this torch
    arms = [a for a in ARMS if a[0] in ("plain-mlp", "fcn")] if args.smoke else ARMS
    num = 512 if args.smoke else None
    steps = 8 if args.smoke else args.steps
    rows, results = [], []
    for variant in args.variants:
        train = DistortedMNIST(variant, "train", root=args.data_dir, seed=args.seed, num_samples=num)
        test = DistortedMNIST(variant, "test", root=args.data_dir, seed=0, num_samples=num).epoch_tensors(0)
        shape = tuple(test[0].shape[1:])
        finals: dict[str, list[torch.Tensor]] = {}
        for label, name, standardize, kind, lr in arms:
            start = time.perf_counter()
            model = build(name, standardize, shape, args.seed)
            error = train_arm(model, train, test, steps, kind, lr, args.seed)
            finals[label] = [p.detach().clone() for p in model.parameters()]
            took = time.perf_counter() - start
            results.append({"variant": variant, "arm": label, "steps": steps, "test_error": error, "time_s": took})
            rows.append([variant.upper(), label, steps, f"{100 * error:.2f}", f"{took:.0f}"])
            print(f"{variant:4s} {label:30s} {100 * error:6.2f}%  {took:5.0f}s", flush=True)
        same = all(torch.equal(a, b) for a, b in zip(finals["plain-mlp"], finals["fcn"], strict=True))
        results.append({"variant": variant, "fcn_equals_plain_mlp": same})
        print(f"{variant}: stn FCN final weights identical to the from-scratch MLP: {same}", flush=True)
    command = "python studies/fcn_study.py " + " ".join(sys.argv[1:] if argv is None else argv)
    table = format_markdown_table(rows, ["data", "arm", "steps", "test error (%)", "time (s)"])
    write_text_atomic(args.out / "results.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(args.out / "fcn_study.md", f"# FCN study\n\nCommand: `{command}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError) as err:  # missing or corrupt data, a failed run: one line, not a traceback
        sys.exit(f"{Path(__file__).name}: error: {err}")
