"""``stn train``: train one model on one distorted-MNIST variant (see :mod:`stn.engine.trainer`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stn.cli._options import add_data_options, add_device_option, positive_int

_EXAMPLES = """examples:
  stn train --data rts --model st-cnn-aff --epochs 10
  stn train --data rts --model cnn --iterations 2000 --out runs/rts-cnn
  stn train --out runs/rts-cnn --resume                  # continue after Ctrl-C (same settings)
  stn train --data tc --model st-cnn-tps --device cuda --amp --iterations 150000
  torchrun --nproc_per_node 2 -m stn train --data rts --model st-cnn-aff   # data-parallel, 2 processes

The run folder (--out, default runs/<data>-<model>-seed<seed>) gets checkpoint.pt (every epoch and on
Ctrl-C / SIGTERM), metrics.jsonl (one line per epoch, with θ diagnostics), summary.json / summary.md /
metrics.csv and the figures curves.png and transformations.png when training finishes.
"""

# option dest -> TrainConfig field; options left out keep the checkpoint's value (--resume) or the default.
_FIELDS = {
    "data": "data",
    "model": "model",
    "epochs": "epochs",
    "iterations": "iterations",
    "batch_size": "batch_size",
    "lr": "lr",
    "momentum": "momentum",
    "weight_decay": "weight_decay",
    "loc_lr_scale": "localization_lr_scale",
    "seed": "seed",
    "num_train": "num_train",
    "num_test": "num_test",
    "data_dir": "data_dir",
    "download": "download",
    "device": "device",
    "amp": "amp",
    "channels_last": "channels_last",
    "tensorboard": "tensorboard",
}


def _config(args: argparse.Namespace):
    import json

    from stn.engine.config import TrainConfig

    given = {field: getattr(args, dest) for dest, field in _FIELDS.items() if getattr(args, dest, None) is not None}
    if hasattr(args, "target_params"):
        given["model_options"] = {"target_params": args.target_params}
    saved = Path(args.out or "") / "config.json"
    if args.resume and args.out and saved.is_file():
        return TrainConfig.from_dict({**json.loads(saved.read_text()), **given})
    missing = [f"--{k}" for k in ("data", "model") if k not in given]
    if missing:
        raise ValueError(f"{' and '.join(missing)} required (unless --resume finds the run in --out)")
    return TrainConfig(**given)


def _paper_error(model: str, data: str) -> str:
    from stn.experiments.table1 import PAPER

    value = PAPER.get(model, {}).get(data)
    return "" if value is None else f" (paper: {value}%)"


def _train(args: argparse.Namespace) -> int:
    from stn.engine.checkpoint import CheckpointError
    from stn.engine.trainer import train

    try:
        config = _config(args)
        out = Path(args.out or f"runs/{config.data}-{config.model}-seed{config.seed}")
        result = train(config, out, resume=args.resume, progress=not args.quiet, figures=not args.no_figures)
    except (CheckpointError, FileExistsError, FileNotFoundError, ImportError, KeyError, TypeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not result.finished:
        return 128 + (result.signal or 0)
    if not result.is_main:
        return 0
    s = result.summary
    print(
        f"{config.model} on {config.data} ({s['source']}, {s['train_samples']} training digits): test error "
        f"{100 * s['test_error']:.2f}%{_paper_error(config.model, config.data)} after {s['steps']} steps, "
        f"{s['time_s'] / 60:.1f} min; results in {out}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from stn.data import VARIANTS
    from stn.experiments.table1 import MODELS as TABLE1_MODELS
    from stn.models import list_models

    p = subparsers.add_parser(
        "train",
        help="train a model on distorted MNIST",
        description="Train a model on a distorted-MNIST variant with the paper's recipe (SGD, batch 256, lr 0.01 "
        "divided by 10 at 1/3 and 2/3 of training; momentum 0.9 is our choice). Fresh distortions every epoch, a "
        "fixed test set, a checkpoint every epoch.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--data", type=str.lower, choices=VARIANTS, help="distorted-MNIST variant")
    p.add_argument(
        "--model",
        type=str.lower,
        choices=list_models(),
        metavar="MODEL",
        help=f"the Table 1 models {', '.join(TABLE1_MODELS)}, or another registered model that takes in_shape "
        "and num_classes (stn.models.list_models())",
    )
    p.add_argument("--epochs", type=positive_int, help="passes over the training set (default 10)")
    p.add_argument("--iterations", type=positive_int, help="total SGD steps (overrides --epochs)")
    p.add_argument("--batch-size", type=positive_int, help="global batch size (default 256)")
    p.add_argument("--lr", type=float, help="base learning rate (default 0.01)")
    p.add_argument("--momentum", type=float, help="SGD momentum (default 0.9; 0 = plain SGD)")
    p.add_argument("--weight-decay", type=float, help="default 0")
    p.add_argument("--loc-lr-scale", type=float, help="localisation nets' lr = lr * this (default 1)")
    p.add_argument("--target-params", type=positive_int, help="model size to solve widths for (default 400000)")
    p.add_argument("--seed", type=int, help="initialisation, distortions and batch order (default 0)")
    p.add_argument("--num-train", type=positive_int, help="train on a fixed subset of N digits")
    p.add_argument("--num-test", type=positive_int, help="test on a fixed subset of N digits")
    p.add_argument("--amp", action="store_true", help="float16 mixed precision (CUDA only)")
    p.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        default=None,
        help="keep the weights NCHW (default: channels-last, about 20%% faster convolutions on CPU)",
    )
    p.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard (pip install tensorboard)")
    p.add_argument("--out", default=None, help="run folder (default runs/<data>-<model>-seed<seed>)")
    p.add_argument("--resume", action="store_true", default=False, help="continue the run in --out")
    p.add_argument("--quiet", action="store_true", default=False, help="no progress bar")
    p.add_argument("--no-figures", action="store_true", default=False, help="skip the PNG figures at the end")
    add_data_options(p)
    add_device_option(p)
    p.set_defaults(func=_train)
