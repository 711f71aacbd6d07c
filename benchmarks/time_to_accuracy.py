"""Time to accuracy on RTS: stn's ST-CNN Aff and recipe against the official PyTorch tutorial's spatial transformer.

Both networks train in this one process, one after the other, on the same threads (``--threads``, default 2) and
the same data: distorted MNIST RTS (42x42) from :class:`stn.data.DistortedMNIST`, the last 10,000 of the 60,000
training digits held out as validation (the reproductions' protocol, :data:`stn.data.VALIDATION_SIZE`); both train
on the other 50,000 (each epoch's distortions drawn from the seed and the epoch alike for both) and are scored on
the same validation digits after every epoch of training (about 50,000 images for either).

* **stn**: ``st-cnn-aff`` trained by stn's engine with the ``long`` budget of ``stn reproduce table1`` (14,063 SGD
  steps of 256, lr 0.03, momentum 0.9, cosine decay after a 5% warm-up; the preset of
  :data:`stn.experiments.table1.BUDGETS`), built by :func:`stn.experiments._common.make_trainer` with
  ``validation=10000``, exactly as ``stn reproduce table1 --data RTS --models st-cnn-aff --budget long`` trains it.
* **tutorial**: the network of the official PyTorch tutorial
  (https://pytorch.org/tutorials/intermediate/spatial_transformer_tutorial.html), written out below as there:
  localisation conv 8@7x7 -> max-pool 2 -> ReLU -> conv 10@5x5 -> max-pool 2 -> ReLU, ``fc_loc`` -> 32 -> 6
  initialised to the identity; classifier conv 10@5x5 -> max-pool 2 -> ReLU, conv 20@5x5 + Dropout2d -> max-pool 2
  -> ReLU, fc -> 50 -> dropout -> 10, log-softmax; its recipe: SGD at lr 0.01 without momentum, batches of 64,
  negative log-likelihood, inputs normalised with the tutorial's MNIST mean and std (0.1307, 0.3081). It trains
  with its own loop, as the tutorial writes it (kept here in benchmarks/, not in stn's engine: the network is not
  one of ``create_model``'s). The tutorial trains 20 epochs; here it trains for the common budget instead.

**Adaptation to 42x42 inputs**: the tutorial's network is written for 28x28 MNIST; its two fully connected layers
read flattened feature maps whose size follows from the input's, so they are computed from it here (and checked to
give the tutorial's 10*3*3 and 320 at 28x28): ``fc_loc`` reads 10*7*7 = 490 features and ``fc1`` 20*7*7 = 980 at
42x42. Everything else is the tutorial's (``F.affine_grid`` / ``F.grid_sample`` with ``align_corners=False``, the
default of current PyTorch). Its data loader keeps a last partial batch; the batches here are whole (the 16
left-over digits of an epoch are dropped), as stn's engine does.

**The clock** counts training steps only (forward, backward, optimiser update), summed over steps, for both:
evaluation (validation and test sets scored after every epoch), stn's checkpoints and θ statistics, and the
generation of each epoch's distorted digits (about 1% of an epoch's training, docs/benchmarks.md) are left out.
Each network trains until the first epoch end at which its clock passes ``--minutes`` (the common budget), or
until its recipe ends (stn's 14,063 steps). The comparison at "the end of the common budget" takes each network's
last evaluation at or before ``--minutes``.

Outputs in ``--out`` (default ``results/time-to-accuracy``): ``time_to_accuracy.csv`` (every evaluation: network,
epoch, steps, images, training minutes, validation and test error), ``time_to_accuracy.png`` (validation error
against training minutes, log scale) and ``time_to_accuracy.md`` (the time each network needs to reach 1.0% and
0.8% validation error, or its error at the end of the budget, and whether stn is ahead at every evaluation).

**Results** (``results/time-to-accuracy``, docs/benchmarks.md): on two idle Intel Xeon cores (AVX-512) stn reached
0.8% validation error after 28.5 min of steps; the tutorial's network ended its 45 min at 1.88%. The full run takes
about 90 minutes of two otherwise idle cores::

    OMP_NUM_THREADS=2 python benchmarks/time_to_accuracy.py --data-dir ../shared/data/mnist \
        --out results/time-to-accuracy

Usage::

    python benchmarks/time_to_accuracy.py --data-dir ../shared/data/mnist          # 45 min per network
    python benchmarks/time_to_accuracy.py --minutes 20 --threads 1 --out runs/tta
    python benchmarks/time_to_accuracy.py --smoke --data-dir DIR                    # a few steps, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn, optim
from torch.utils.data import Dataset

from stn.data import VALIDATION_SIZE
from stn.engine.batches import train_batches
from stn.engine.callbacks import Callback
from stn.engine.distributed import DistContext
from stn.engine.evaluation import evaluate
from stn.engine.tasks import ClassificationTask
from stn.experiments._common import make_trainer
from stn.experiments.table1 import BUDGETS

THRESHOLDS = (1.0, 0.8)  # validation error (%) whose time to reach is reported
STN_MODEL = "st-cnn-aff"
VARIANT = "rts"
INPUT_SIZE = 42  # RTS digits are 42x42
# the tutorial's recipe
TUTORIAL_LR = 0.01
TUTORIAL_BATCH_SIZE = 64
TUTORIAL_MEAN, TUTORIAL_STD = 0.1307, 0.3081  # its transforms.Normalize((0.1307,), (0.3081,))
# --smoke: tiny data and a few steps, so that the test suite checks the script end to end in seconds
SMOKE = {"num_train": 64, "num_test": 32, "validation": 32, "batch_size": 16, "epochs": 2}
NAMES = {"stn": f"stn {STN_MODEL}, long budget", "tutorial": "PyTorch tutorial STN"}


def _after(size: int, layers: Sequence[tuple[int, int]]) -> int:
    """The side of a feature map after ``(kernel, pool)`` pairs of a valid convolution then a max-pool."""
    for kernel, pool in layers:
        size = (size - kernel + 1) // pool
    return size


class TutorialNet(nn.Module):
    """The spatial transformer network of the official PyTorch tutorial, as written there, for square inputs of
    side ``size`` (28 gives the tutorial's own layer sizes; the fully connected inputs follow from ``size``)."""

    def __init__(self, size: int = INPUT_SIZE) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.flat = 20 * _after(size, [(5, 2), (5, 2)]) ** 2  # 320 at 28x28, 980 at 42x42
        self.fc1 = nn.Linear(self.flat, 50)
        self.fc2 = nn.Linear(50, 10)

        # Spatial transformer localization-network
        self.localization = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=7),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5),
            nn.MaxPool2d(2, stride=2),
            nn.ReLU(True),
        )
        self.loc_flat = 10 * _after(size, [(7, 2), (5, 2)]) ** 2  # 10*3*3 at 28x28, 10*7*7 at 42x42

        # Regressor for the 3 * 2 affine matrix
        self.fc_loc = nn.Sequential(nn.Linear(self.loc_flat, 32), nn.ReLU(True), nn.Linear(32, 3 * 2))

        # Initialize the weights/bias with identity transformation
        self.fc_loc[2].weight.data.zero_()
        self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))

    def stn(self, x: Tensor) -> Tensor:
        """Spatial transformer network forward function."""
        xs = self.localization(x)
        xs = xs.view(-1, self.loc_flat)
        theta = self.fc_loc(xs)
        theta = theta.view(-1, 2, 3)

        grid = F.affine_grid(theta, x.size(), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        """Log-probabilities of the ten classes of raw ``(B, 1, size, size)`` digits in [0, 1]."""
        x = (x - TUTORIAL_MEAN) / TUTORIAL_STD  # the tutorial's data loaders normalise; done here for both loops
        # transform the input
        x = self.stn(x)

        # Perform the usual forward pass
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, self.flat)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


@dataclasses.dataclass
class Point:
    """One evaluation: after ``epoch`` epochs (``steps`` steps, ``images`` training images) and ``minutes`` of
    training steps, validation and test error in %."""

    network: str
    epoch: int
    steps: int
    images: int
    minutes: float
    val_error: float
    test_error: float


class _BudgetSpent(Exception):
    """Raised at the first epoch end past the time budget, to stop stn's trainer there."""


def _say(point: Point) -> None:
    print(
        f"{point.network:8s} epoch {point.epoch:3d}  {point.minutes:6.2f} min of steps  "
        f"val {point.val_error:6.2f}%  test {point.test_error:6.2f}%",
        flush=True,
    )


def train_stn(
    budget_s: float, seed: int, data: dict[str, Any], smoke: bool
) -> tuple[list[Point], tuple[Dataset, Dataset, Dataset], int, str]:
    """Train stn's ST-CNN Aff with the long budget until its recipe ends or its step clock passes ``budget_s`` at
    an epoch end; returns the evaluations, the (train, validation, test) sets it used, its parameter count and its
    recipe in words."""
    config = BUDGETS["long"].config(seed=seed, device="cpu")
    if smoke:
        config = config.replace(
            iterations=SMOKE["epochs"] * SMOKE["num_train"] // SMOKE["batch_size"], batch_size=SMOKE["batch_size"]
        )
    points: list[Point] = []

    class Clock(Callback):
        """Records each epoch's validation error against the trainer's step time; stops past the budget."""

        def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
            steps = trainer.step
            point = Point(
                "stn", record["epoch"], steps, steps * config.batch_size, trainer.train_time / 60,
                100 * record["val_error"], 100 * record["test_error"],
            )  # fmt: skip
            points.append(point)
            _say(point)
            if trainer.train_time >= budget_s:
                raise _BudgetSpent

    with tempfile.TemporaryDirectory(prefix="tta-stn-") as run_dir:
        trainer = make_trainer(VARIANT, STN_MODEL, config, run_dir, progress=False, figures=False, **data)
        trainer.callbacks.append(Clock())
        try:
            result = trainer.fit()
        except _BudgetSpent:
            pass
        else:
            if not result.finished:
                raise KeyboardInterrupt
    params = sum(p.numel() for p in trainer.model.parameters())
    c = config
    recipe = (
        f"{c.iterations:,} steps of {c.batch_size} (budget `long`{', shortened: --smoke' if smoke else ''}), "
        f"SGD lr {c.lr:g}, momentum {c.momentum:g}, {c.schedule} decay after a {c.warmup:.0%} warm-up"
    )
    return points, (trainer.train_data, trainer.val_data, trainer.eval_data), params, recipe


def train_tutorial(
    sets: tuple[Dataset, Dataset, Dataset], budget_s: float, seed: int, batch_size: int, max_epochs: int | None
) -> tuple[list[Point], int]:
    """Train the tutorial's network with its recipe until its step clock passes ``budget_s`` at an epoch end (or
    ``max_epochs``); returns the evaluations and its parameter count."""
    train, val, test = sets
    torch.manual_seed(seed)
    model = TutorialNet(INPUT_SIZE)
    optimizer = optim.SGD(model.parameters(), lr=TUTORIAL_LR)
    task, device, ctx = ClassificationTask(10), torch.device("cpu"), DistContext()
    steps_per_epoch = len(train) // batch_size
    clock, steps, epoch, points = 0.0, 0, 0, []
    while clock < budget_s and (max_epochs is None or epoch < max_epochs):
        model.train()
        for data, target in train_batches(train, batch_size, seed, epoch, 0, steps_per_epoch, ctx, device):
            start = time.perf_counter()
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            clock += time.perf_counter() - start
            steps += 1
        epoch += 1
        val_error, test_error = (100 * evaluate(model, s, task, device=device)["error"] for s in (val, test))
        points.append(Point("tutorial", epoch, steps, steps * batch_size, clock / 60, val_error, test_error))
        _say(points[-1])
    return points, sum(p.numel() for p in model.parameters())


def _within(points: Sequence[Point], minutes: float) -> list[Point]:
    return [p for p in points if p.minutes <= minutes]


def time_to(points: Sequence[Point], threshold: float) -> Point | None:
    """The first evaluation at or below ``threshold`` % validation error (None: never)."""
    return next((p for p in points if p.val_error <= threshold), None)


def error_at(points: Sequence[Point], minutes: float) -> Point | None:
    """The last evaluation at or before ``minutes`` of training (None: none yet)."""
    before = _within(points, minutes)
    return before[-1] if before else None


def ahead_everywhere(ours: Sequence[Point], theirs: Sequence[Point], minutes: float) -> tuple[int, int, float | None]:
    """At every evaluation time of either curve up to ``minutes`` where both have been evaluated, whether ``ours``'s
    latest validation error is below ``theirs``'s: ``(times ahead, times compared, first time not ahead)``."""
    times = sorted({p.minutes for p in (*ours, *theirs) if p.minutes <= minutes})
    ahead = compared = 0
    first_behind = None
    for t in times:
        mine, other = error_at(ours, t), error_at(theirs, t)
        if mine is None or other is None:
            continue
        compared += 1
        if mine.val_error < other.val_error:
            ahead += 1
        elif first_behind is None:
            first_behind = t
    return ahead, compared, first_behind


def plot(curves: dict[str, list[Point]], minutes: float, path: Path) -> Path:
    """Validation error (%) against minutes of training steps, log scale, with the thresholds and the budget."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from stn.viz import save_figure

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, points in curves.items():
        ax.plot([p.minutes for p in points], [p.val_error for p in points], ".-", label=NAMES[key])
    for threshold in THRESHOLDS:
        ax.axhline(threshold, color="gray", ls=":", lw=1)
        ax.annotate(f"{threshold:g}%", (0.0, threshold), xycoords=("axes fraction", "data"), xytext=(3, 1),
                    textcoords="offset points", va="bottom", fontsize=7, color="gray")  # fmt: skip
    ax.axvline(minutes, color="gray", ls="--", lw=0.8, label=f"common budget ({minutes:g} min)")
    ax.set(
        yscale="log",
        xlabel="training minutes (steps only; evaluation excluded)",
        ylabel="validation error (%)",
        title="RTS validation error against training time",
    )
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _row(key: str, points: list[Point], params: int, minutes: float, recipe: str) -> list[str]:
    reached = []
    for threshold in THRESHOLDS:
        hit = time_to(_within(points, minutes), threshold)
        reached.append(f"{hit.minutes:.1f} min (epoch {hit.epoch})" if hit else "not reached")
    end = error_at(points, minutes)
    best = min(_within(points, minutes), key=lambda p: p.val_error, default=None)
    at_end = f"{end.val_error:.2f} ({end.minutes:.1f} min, {end.steps:,} steps)" if end else "—"
    return [
        NAMES[key], recipe, f"{params:,}", *reached, at_end,
        f"{best.val_error:.2f} (epoch {best.epoch})" if best else "—", f"{end.test_error:.2f}" if end else "—",
    ]  # fmt: skip


def report(
    curves: dict[str, list[Point]],
    params: dict[str, int],
    recipes: dict[str, str],
    sizes: tuple[int, int],
    minutes: float,
    threads: int,
    out: Path,
    command: str,
) -> tuple[Path, str]:
    """Write the CSV, the curve and the Markdown table in ``out`` (``sizes``: training and validation digits);
    returns the Markdown's path and a one-line verdict (with the ratio of the two networks' validation errors at
    the end of the budget)."""
    from stn.io import format_markdown_table, write_csv, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_csv([dataclasses.asdict(p) for points in curves.values() for p in points], out / "time_to_accuracy.csv")
    plot(curves, minutes, out / "time_to_accuracy.png")
    header = ["network", "recipe", "params", *(f"time to {t}% val error" for t in THRESHOLDS)]
    header += [f"val error (%) at the end of {minutes:g} min", "lowest val error (%)", "test error (%) at the end"]
    rows = [_row(key, points, params[key], minutes, recipes[key]) for key, points in curves.items()]
    ahead, compared, behind = ahead_everywhere(curves["stn"], curves["tutorial"], minutes)
    ends = {key: error_at(points, minutes) for key, points in curves.items()}
    if all(ends.values()):
        ratio = f"{ends['stn'].val_error / max(ends['tutorial'].val_error, 1e-9):.2f}x"
    else:
        ratio = "n/a (a network had no evaluation within the budget)"
    verdict = (
        f"stn ahead of the tutorial at {ahead} of {compared} evaluation times"
        + (f" (first behind at {behind:.1f} min)" if behind is not None else "")
        + f"; validation error at the end of the budget, stn / tutorial: {ratio}"
    )
    text = [
        "# Time to accuracy on RTS: stn against the PyTorch tutorial's spatial transformer\n",
        f"`{command}` (benchmarks/time_to_accuracy.py; its docstring gives the two recipes and the tutorial "
        f"network's adaptation to 42x42). torch {torch.__version__}, {threads} thread(s), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs seen.\n",
        f"Both on the same data: RTS digits of the {sizes[0]:,} training digits left after holding the last "
        f"{sizes[1]:,} out as validation; both scored on those validation digits after every epoch. The clock "
        "counts training steps "
        "only (forward, backward, update): evaluation, checkpoints and data generation are excluded. "
        f"Common budget: {minutes:g} min of steps per network; each stops at its first epoch end past it (stn also "
        "at the end of its recipe).\n",
        format_markdown_table(rows, header),
        f"{verdict}.\n",
        "![validation error against training minutes](time_to_accuracy.png)\n",
    ]
    return write_text_atomic(out / "time_to_accuracy.md", "\n".join(text)), verdict


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (argparse would print the whole usage first); exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (user errors: one line on stderr and 1)."""
    parser = _Parser(
        prog="time_to_accuracy.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--minutes", type=_positive(float), default=45.0, help="common budget of training minutes per network (45)"
    )
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: the usual search, see stn data)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default results/time-to-accuracy)")
    parser.add_argument("--threads", type=_positive(int), default=2, help="torch threads for both networks (2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both networks and of the data (0)")
    parser.add_argument("--smoke", action="store_true", help="64 training digits, 2 epochs each: seconds")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or (Path(tempfile.mkdtemp(prefix="tta-smoke-")) if args.smoke else Path("results/time-to-accuracy"))
    if out.exists() and not out.is_dir():
        print(f"{parser.prog}: error: {out} is a file; --out needs a folder", file=sys.stderr)
        return 1
    budget_s = args.minutes * 60  # the smoke run ends with its two epochs, seconds into the budget
    data = {"data_dir": args.data_dir, "validation": VALIDATION_SIZE}
    if args.smoke:
        data |= {k: SMOKE[k] for k in ("num_train", "num_test", "validation")}
    command = shlex.join(["python", "benchmarks/time_to_accuracy.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        stn_points, sets, stn_params, stn_recipe = train_stn(budget_s, args.seed, data, args.smoke)
        batch = SMOKE["batch_size"] if args.smoke else TUTORIAL_BATCH_SIZE
        epochs = SMOKE["epochs"] if args.smoke else None
        tutorial_points, tutorial_params = train_tutorial(sets, budget_s, args.seed, batch, epochs)
        curves = {"stn": stn_points, "tutorial": tutorial_points}
        params = {"stn": stn_params, "tutorial": tutorial_params}
        recipes = {
            "stn": stn_recipe,
            "tutorial": f"batches of {batch}, SGD lr {TUTORIAL_LR:g}, no momentum, constant rate, until the budget",
        }
        sizes = (len(sets[0]), len(sets[1]))
        path, verdict = report(curves, params, recipes, sizes, args.minutes, args.threads, out, command)
    except (OSError, ValueError) as err:
        message = re.sub(r"\s+", " ", str(err)).strip()
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    print(path.read_text(encoding="utf-8"))
    print(f"{verdict}\nwrote {path}, {path.with_suffix('.csv')} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
