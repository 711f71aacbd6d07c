"""``stn eval``: test error of a checkpoint on a distorted-MNIST test set."""

from __future__ import annotations

import argparse
import json
import sys

from stn.cli._options import add_data_options, add_device_option, positive_int

_EXAMPLES = """examples:
  stn eval runs/rts-st-cnn-aff-seed0/checkpoint.pt
  stn eval runs/rts-st-cnn-aff-seed0/checkpoint.pt --data rts --num-test 2000 --json
"""


def load_test_set(checkpoint: dict, args: argparse.Namespace, num_test: int | None = None):
    """The fixed test set of ``args.data`` (default: the checkpoint's variant), checked against the model's input
    shape; ``num_test`` digits (default all)."""
    from stn.data import DistortedMNIST
    from stn.engine.config import TEST_SEED

    data = args.data or checkpoint["config"]["data"]
    test = DistortedMNIST(
        data, "test", root=args.data_dir, seed=TEST_SEED, num_samples=num_test, download=args.download
    )
    expected = tuple(checkpoint["model_kwargs"]["in_shape"])
    got = (test.info.channels, *test.info.image_size)
    if got != expected:
        raise ValueError(
            f"the model takes inputs {expected} but {data!r} images are {got}; "
            f"it was trained on {checkpoint['config']['data']!r}"
        )
    if test.source != checkpoint.get("source", test.source):
        print(
            f"warning: the model was trained on {checkpoint['source']!r} but is tested on {test.source!r}",
            file=sys.stderr,
        )
    return test


def _eval(args: argparse.Namespace) -> int:
    from stn.engine.checkpoint import CheckpointError, load_model
    from stn.engine.trainer import evaluate, resolve_device

    try:
        device = resolve_device(args.device)
        model, checkpoint = load_model(args.checkpoint, device)
        test = load_test_set(checkpoint, args, args.num_test)
    except (CheckpointError, FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    images, labels = test.epoch_tensors(0, device)
    loss, error = evaluate(model, images, labels, args.batch_size)
    result = {
        "checkpoint": str(args.checkpoint),
        "model": checkpoint["model_name"],
        "data": test.variant,
        "source": test.source,
        "test_samples": len(test),
        "test_error": error,
        "test_loss": loss,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['model']} on {test.variant} ({len(test)} test digits, {test.source}): "
            f"error {100 * error:.2f}%, loss {loss:.4f}"
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from stn.data import VARIANTS

    p = subparsers.add_parser(
        "eval",
        help="test error of a checkpoint",
        description="Score a checkpoint on the fixed distorted test set (the same digits every run is scored on).",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a checkpoint.pt written by stn train")
    p.add_argument(
        "--data",
        type=str.lower,
        choices=VARIANTS,
        default=None,
        help="variant to test on (default: the one it was trained on)",
    )
    p.add_argument("--num-test", type=positive_int, default=None, help="score a fixed subset of N test digits")
    p.add_argument("--batch-size", type=positive_int, default=1000, help="default 1000")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_data_options(p)
    add_device_option(p)
    p.set_defaults(func=_eval)
