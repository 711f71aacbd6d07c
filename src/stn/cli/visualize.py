"""``stn visualize``: what a trained spatial transformer does (the paper's Table 1, right), and an animation of
it over training."""

from __future__ import annotations

import argparse

from stn.engine.options import add_data_options, add_device_option, output_file, positive_int

_EXAMPLES = """examples:
  stn visualize runs/rts-st-cnn-aff-seed0 --out fig.png
  stn visualize runs/rts-st-cnn-aff-seed0/checkpoint.pt --data rts --out fig.png --num 10 --gif
  stn visualize runs/rts-st-cnn-aff-seed0 --curves --out fig.png   # also the training curves
"""


def _visualize(args: argparse.Namespace) -> int:
    import torch

    from stn import viz
    from stn.cli._runs import refuse_a_folder_of_runs
    from stn.cli.eval import load_test_set
    from stn.engine.checkpoint import Progress, RunRecord, load_model
    from stn.engine.distributed import resolve_device

    out = args.out
    device = resolve_device(args.device)
    refuse_a_folder_of_runs(args.checkpoint)
    model, checkpoint = load_model(args.checkpoint, device)
    record, progress = RunRecord.of(checkpoint), Progress.of(checkpoint)
    shape = record.input_shape or ()
    if len(shape) != 3:
        raise ValueError(
            f"{record.model_name} takes inputs {shape}: only transformers of 2-D images (C, H, W) can be "
            "drawn here (the 3-D experiment draws its own figure, projections.png)"
        )
    test = load_test_set(checkpoint, args)
    last = min(args.first + args.num, len(test))
    if hasattr(test, "epoch_tensors"):
        images = test.epoch_tensors(0, device)[0][args.first : last]
    else:
        images = torch.stack([test[i][0] for i in range(args.first, last)]).to(device)
    if len(images) == 0:
        raise ValueError(f"--first {args.first} is past the {len(test)} test samples")
    title = f"{record.model_name}, step {progress.step}"
    print(f"wrote {viz.plot_model_transformations(model, images, out, title)}")
    if args.gif:
        history = progress.theta_history
        if not history:
            raise ValueError(f"{args.checkpoint} kept no θ history to animate")
        print(f"wrote {viz.training_gif(model, history, out.with_suffix('.gif'))}")
    if args.curves:
        curves = out.with_name(f"{out.stem}-curves.png")
        print(f"wrote {viz.plot_curves(progress.history, curves, title)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from stn.data import VARIANTS

    p = subparsers.add_parser(
        "visualize",
        help="figure of the learnt transformations (inputs, sampling grids, outputs)",
        description="For a batch of test samples: the input, the sampling grid T_θ(G) drawn on the input (red: "
        "its border) and the transformer's output, as in the paper's Table 1 (right). --gif animates the "
        "transformations over training from the θ the trainer kept every epoch. Works on the run of any "
        "experiment whose test data stn can rebuild and whose model has a spatial transformer on 2-D images.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a run folder, or a checkpoint.pt of a model with a spatial transformer")
    p.add_argument("--out", required=True, type=output_file, help="PNG to write (the GIF goes beside it, .gif)")
    p.add_argument(
        "--data",
        type=str.lower,
        choices=VARIANTS,
        default=None,
        help="distorted-MNIST variant to show (default: the one it was trained on)",
    )
    p.add_argument("--num", type=positive_int, default=8, help="samples to show (default 8)")
    p.add_argument("--first", type=int, default=0, help="index of the first test sample shown (default 0)")
    p.add_argument("--gif", action="store_true", help="also write an animation over training epochs")
    p.add_argument("--curves", action="store_true", help="also write the training curves (<out>-curves.png)")
    add_data_options(p)
    add_device_option(p)
    p.set_defaults(func=_visualize)
