"""``stn export``: a checkpoint as ONNX or TorchScript, checked against the PyTorch model."""

from __future__ import annotations

import argparse

from stn.engine.options import output_file

_EXAMPLES = """examples:
  stn export runs/rts-st-cnn-aff-seed0 --format onnx        # -> runs/rts-st-cnn-aff-seed0/model.onnx
  stn export runs/rts-st-cnn-aff-seed0/checkpoint.pt --format torchscript --out st-cnn.pt

The exported model takes inputs (batch, *input shape of the run) and returns the model's logits: (batch,
classes) for a classifier, (batch, 5, 11) for an SVHN sequence model.
"""

_SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


def _export(args: argparse.Namespace) -> int:
    from stn.cli._runs import refuse_a_folder_of_runs
    from stn.engine.checkpoint import RunRecord, checkpoint_path, load_model
    from stn.export import check_export, export_model

    refuse_a_folder_of_runs(args.checkpoint)
    model, checkpoint = load_model(args.checkpoint)
    record = RunRecord.of(checkpoint)
    in_shape = tuple(record.input_shape or record.model_kwargs.get("in_shape") or ())
    if not in_shape:
        raise ValueError(f"{args.checkpoint} records no input shape: cannot export {record.model_name}")
    out = args.out or checkpoint_path(args.checkpoint).with_name(f"model{_SUFFIX[args.format]}")
    export_model(model, in_shape, out, args.format)
    print(f"wrote {out} ({record.model_name}: input (batch, {', '.join(map(str, in_shape))}), output logits)")
    if not args.no_check:
        diff = check_export(model, in_shape, out, args.format)
        print(f"checked: largest difference from the PyTorch model {diff:.2e}")
        if diff > 1e-3:
            raise ValueError(f"the export {out} does not reproduce the model's outputs (difference {diff:.2e})")
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
    p.add_argument("checkpoint", help="a run folder, or a checkpoint.pt written by the training engine")
    p.add_argument("--format", choices=tuple(_SUFFIX), default="onnx", help="default onnx")
    p.add_argument(
        "--out",
        type=output_file,
        default=None,
        help="file to write (default model.onnx / model.torchscript.pt beside the checkpoint)",
    )
    p.add_argument("--no-check", action="store_true", help="skip comparing the export with the model")
    p.set_defaults(func=_export)
