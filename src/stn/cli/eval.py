"""``stn eval``: score a run's model on its test data again (any experiment whose data stn can rebuild)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from stn.engine.options import add_data_options, add_device_option, positive_int

_EXAMPLES = """examples:
  stn eval runs/rts-st-cnn-aff-seed0                       # a run folder (its checkpoint.pt)
  stn eval runs/rts-st-cnn-aff-seed0/checkpoint.pt --data rts --num-test 2000 --json
  stn eval results/table2/64px/multi --data-dir ~/data/svhn   # SVHN: where the photos are now

The model is scored with its task (classification error, SVHN sequence error...) on the test set recorded in
the checkpoint; a run on your own data cannot be rebuilt here (score it with stn.engine.evaluate).
"""


def load_test_set(checkpoint: dict[str, Any], args: argparse.Namespace, num_test: int | None = None) -> Any:
    """The test set recorded in ``checkpoint`` (``--data`` / ``num_test`` / ``--data-dir`` override the
    variant, sample count and location), checked against the model's input shape."""
    from stn.experiments.sources import build

    spec = dict(checkpoint.get("data") or {})
    if args.data is not None:
        if spec.get("kind") != "distorted-mnist":
            raise ValueError(f"--data picks a distorted-MNIST variant; this model was trained on {_describe(spec)}")
        spec["variant"] = args.data
    if num_test is not None:
        spec["num_test"] = num_test
    if args.data_dir is not None:
        spec["root"] = args.data_dir
    if getattr(args, "download", False):
        spec["download"] = True
    test = build(spec, "test")
    expected = tuple(checkpoint.get("input_shape") or ())
    got = tuple(test.epoch_tensors(0)[0].shape[1:]) if hasattr(test, "epoch_tensors") else tuple(test[0][0].shape)
    if expected and got != expected:
        raise ValueError(
            f"the model takes inputs {expected} but this test data has {got}; it was trained on "
            f"{_describe(checkpoint.get('data') or {})}"
        )
    trained_on = checkpoint.get("source")
    if trained_on and getattr(test, "source", trained_on) != trained_on:
        print(f"warning: the model was trained on {trained_on!r} but is tested on {test.source!r}", file=sys.stderr)
    return test


def _describe(spec: dict[str, Any]) -> str:
    if not spec:
        return "data of its own (no data spec recorded)"
    if spec.get("kind") == "distorted-mnist":
        return spec["variant"]
    return f"{spec['kind']} ({', '.join(f'{k} {v}' for k, v in spec.items() if k != 'kind')})"


def _eval(args: argparse.Namespace) -> int:
    from stn.engine.checkpoint import load_model
    from stn.engine.tasks import task_from_spec
    from stn.engine.trainer import evaluate, resolve_device

    device = resolve_device(args.device)
    model, checkpoint = load_model(args.checkpoint, device)
    if "task" not in checkpoint:
        raise ValueError(f"{args.checkpoint} records no task (a model saved without training): nothing to score")
    task = task_from_spec(checkpoint["task"])
    test = load_test_set(checkpoint, args, args.num_test)
    batch_size = args.batch_size or checkpoint.get("config", {}).get("eval_batch_size", 1000)
    metrics = evaluate(model, test, task, batch_size=batch_size, device=device)
    data = dict(checkpoint["data"], **({"variant": args.data} if args.data else {}))
    result = {
        "checkpoint": str(args.checkpoint),
        "model": checkpoint["model_name"],
        "data": _describe(data),
        "source": getattr(test, "source", None),
        "test_samples": len(test),
        **{f"test_{m}": v for m, v in metrics.items()},
    }
    if args.json:
        print(json.dumps(result))
        return 0
    scores = ", ".join(f"{m} {v:.4f}" if m == "loss" else f"{m} {100 * v:.2f}%" for m, v in metrics.items())
    print(f"{result['model']} on {result['data']} ({len(test)} test samples): {scores}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from stn.data import VARIANTS

    p = subparsers.add_parser(
        "eval",
        help="test error of a checkpoint",
        description="Score a checkpoint (or run folder) of any experiment on the test set it was scored on "
        "during training (distorted MNIST: the same fixed digits every run is scored on).",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a run folder, or a checkpoint.pt written by the training engine")
    p.add_argument(
        "--data",
        type=str.lower,
        choices=VARIANTS,
        default=None,
        help="distorted-MNIST variant to test on (default: the one it was trained on)",
    )
    p.add_argument("--num-test", type=positive_int, default=None, help="score a fixed subset of N test samples")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: the run's evaluation batch size")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_data_options(p)
    add_device_option(p)
    p.set_defaults(func=_eval)
