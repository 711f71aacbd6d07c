"""``stn eval``: score a run's model, or weights shipped with stn, on its test data again (any experiment whose
data stn can rebuild), computed as the training run computed its test error (:func:`score`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from stn.engine.options import add_data_options, add_device_option, positive_int

if TYPE_CHECKING:  # torch is imported when a command runs, not when its parser is built
    import torch
    from torch import nn

_EXAMPLES = """examples:
  stn eval runs/rts-st-cnn-aff-seed0                       # a run folder (its checkpoint.pt)
  stn eval runs/rts-st-cnn-aff-seed0/checkpoint.pt --data rts --num-test 2000 --json
  stn eval results/table2/64px/multi --data-dir ~/data/svhn   # SVHN: where the photos are now
  stn eval --pretrained st-cnn-aff:rts --data rts          # weights shipped with stn (stn.models.list_pretrained())

The model is scored with its task (classification error, SVHN sequence error...) on the test set recorded in
the checkpoint; a run on your own data cannot be rebuilt here (score it with stn.engine.evaluate).
"""


def load_test_set(checkpoint: dict[str, Any], args: argparse.Namespace, num_test: int | None = None) -> Any:
    """The test set recorded in ``checkpoint`` (``--data`` / ``num_test`` / ``--data-dir`` override the
    variant, sample count and location), checked against the model's input shape."""
    from stn.data.specs import build
    from stn.engine.checkpoint import RunRecord

    record = RunRecord.of(checkpoint)
    spec = dict(record.data)
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
    if num_test is not None and spec.get("kind") not in _SIZED_KINDS:
        raise ValueError(
            f"--num-test applies to distorted-MNIST and 3-D volume runs; this model was trained on {_describe(spec)}"
        )
    test = build(spec, "test")
    if num_test is not None and num_test > (size := _test_size(test)):
        source = getattr(test, "source", None)
        raise ValueError(
            f"--num-test {num_test:,} is above the {size:,} samples of this test set"
            f"{f' ({source})' if source else ''}; give at most {size:,}"
        )
    expected = record.input_shape or ()
    got = tuple(test.epoch_tensors(0)[0].shape[1:]) if hasattr(test, "epoch_tensors") else tuple(test[0][0].shape)
    if expected and got != expected:
        raise ValueError(
            f"the model takes inputs {expected} but this test data has {got}; it was trained on "
            f"{_describe(record.data)}"
        )
    trained_on = record.source
    if trained_on and getattr(test, "source", trained_on) != trained_on:
        print(f"warning: the model was trained on {trained_on!r} but is tested on {test.source!r}", file=sys.stderr)
    return test


# Data kinds whose spec takes a test-sample count (the others would ignore --num-test).
_SIZED_KINDS = ("distorted-mnist", "posed-volumes")


def _test_size(test: Any) -> int:
    """How many distinct samples the test split holds (a DistortedMNIST cycles its digits past that count)."""
    mnist = getattr(test, "mnist", None)
    return len(mnist) if mnist is not None else len(test)


def _describe(spec: dict[str, Any]) -> str:
    if not spec:
        return "data of its own (no data spec recorded)"
    if spec.get("kind") == "distorted-mnist":
        return spec["variant"]
    return f"{spec['kind']} ({', '.join(f'{k} {v}' for k, v in spec.items() if k != 'kind')})"


def score(
    model: nn.Module,
    checkpoint: dict[str, Any],
    test: Any,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
) -> dict[str, float]:
    """Every metric of the checkpoint's task (``{"loss": ..., "error": ...}``) of ``model`` on ``test``, computed
    as the training run computed its test error: :func:`stn.engine.evaluate` with the run's evaluation batch size
    and weight layout (channels-last when the run trained so; the layout changes the last bits of the loss).

    ``checkpoint`` is a training checkpoint or a pretrained-weights entry (both record ``task`` and ``config``).
    """
    import torch

    from stn.engine.checkpoint import RunRecord
    from stn.engine.evaluation import evaluate
    from stn.engine.tasks import task_from_spec

    record = RunRecord.of(checkpoint)
    config = record.config
    if config.get("channels_last") and all(p.dim() != 5 for p in model.parameters()):
        model = model.to(memory_format=torch.channels_last)
    task = task_from_spec(record.task)
    return evaluate(model, test, task, batch_size=batch_size or config.get("eval_batch_size", 1000), device=device)


def _pretrained(name: str, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """``(model in eval mode on device, its manifest entry)`` of the pretrained weights ``name``."""
    from stn.models import create_model
    from stn.models.pretrained import pretrained_entry, split_name

    entry = pretrained_entry(*split_name(name))
    model = create_model(entry["model_name"], pretrained=entry["tag"])
    return model.to(device).eval(), entry


def _published(entry: dict[str, Any], args: argparse.Namespace) -> dict[str, float] | None:
    """The metrics the pretrained ``entry`` recorded for the test set ``args`` asks for, if it recorded them."""
    if args.data not in (None, entry["data"]["variant"]):
        return None
    if args.num_test is None:
        return {"loss": entry.get("test_loss"), "error": entry["test_error"]}
    if args.num_test == entry["subset"]["num_test"]:
        return {"loss": entry["subset"].get("test_loss"), "error": entry["subset"]["test_error"]}
    return None


def _eval(args: argparse.Namespace) -> int:
    from stn.cli._runs import refuse_a_folder_of_runs
    from stn.engine.checkpoint import RunRecord, load_model
    from stn.engine.distributed import resolve_device

    device = resolve_device(args.device)
    if args.pretrained is not None:
        model, checkpoint = _pretrained(args.pretrained, device)
        what = {"pretrained": f"{checkpoint['model_name']}.{checkpoint['tag']}"}
    else:
        refuse_a_folder_of_runs(args.checkpoint)
        model, checkpoint = load_model(args.checkpoint, device)
        what = {"checkpoint": str(args.checkpoint)}
    record = RunRecord.of(checkpoint)
    if record.task is None:
        raise ValueError(f"{args.checkpoint} records no task (a model saved without training): nothing to score")
    test = load_test_set(checkpoint, args, args.num_test)
    metrics = score(model, checkpoint, test, device, args.batch_size)
    data = dict(record.data, **({"variant": args.data} if args.data else {}))
    published = _published(checkpoint, args) if args.pretrained is not None else None
    result = {
        **what,
        "model": record.model_name,
        "data": _describe(data),
        "source": getattr(test, "source", None),
        "test_samples": len(test),
        **{f"test_{m}": v for m, v in metrics.items()},
        **({f"published_{m}": v for m, v in published.items()} if published else {}),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    line = f"{what.get('pretrained', result['model'])} on {result['data']} ({len(test)} test samples): "
    line += _scores(metrics)
    if published:
        line += f" (published: {_scores(published)})"
    print(line)
    return 0


def _scores(metrics: dict[str, float | None]) -> str:
    return ", ".join(
        f"{m} {v:.4f}" if m == "loss" else f"{m} {100 * v:.2f}%" for m, v in metrics.items() if v is not None
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    from stn.data import VARIANTS

    p = subparsers.add_parser(
        "eval",
        help="test error of a checkpoint",
        description="Score a checkpoint (or run folder) of any experiment, or weights shipped with stn "
        "(--pretrained), on the test set it was scored on during training (distorted MNIST: the official 10,000 "
        "test digits, distorted the same way for every run), computed as the training run computed it.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("checkpoint", nargs="?", help="a run folder, or a checkpoint.pt written by the training engine")
    which.add_argument(
        "--pretrained",
        metavar="MODEL:TAG",
        help="weights shipped with stn instead of a checkpoint, e.g. st-cnn-aff:rts (or st-cnn-aff.rts)",
    )
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
