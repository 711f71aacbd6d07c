"""``stn export``: a checkpoint as ONNX or TorchScript, checked against the PyTorch model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_EXAMPLES = """examples:
  stn export runs/rts-st-cnn-aff-seed0/checkpoint.pt --format onnx        # -> runs/.../model.onnx
  stn export runs/rts-st-cnn-aff-seed0/checkpoint.pt --format torchscript --out st-cnn.pt

The exported model takes images (batch, C, H, W) in [0, 1] (background 0) and returns logits (batch, classes).
"""

_SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


def _export(args: argparse.Namespace) -> int:
    from stn.engine.checkpoint import CheckpointError, load_model
    from stn.export import check_export, export_model

    try:
        model, checkpoint = load_model(args.checkpoint)
        in_shape = tuple(checkpoint["model_kwargs"]["in_shape"])
        out = Path(args.out) if args.out else Path(args.checkpoint).with_name(f"model{_SUFFIX[args.format]}")
        export_model(model, in_shape, out, args.format)
        print(f"wrote {out} (input images (batch, {', '.join(map(str, in_shape))}), output logits)")
        if not args.no_check:
            diff = check_export(model, in_shape, out, args.format)
            print(f"checked: largest difference from the PyTorch model {diff:.2e}")
            if diff > 1e-3:
                print("error: the export does not reproduce the model's outputs", file=sys.stderr)
                return 1
    except (CheckpointError, FileNotFoundError, ImportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript",
        description="Export a trained model for deployment (the batch size stays free) and check that the "
        "export gives the model's outputs (ONNX through onnxruntime).",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a checkpoint.pt written by stn train")
    p.add_argument("--format", choices=tuple(_SUFFIX), default="onnx", help="default onnx")
    p.add_argument(
        "--out", default=None, help="file to write (default model.onnx / model.torchscript.pt beside the checkpoint)"
    )
    p.add_argument("--no-check", action="store_true", help="skip comparing the export with the model")
    p.set_defaults(func=_export)
