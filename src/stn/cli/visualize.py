"""``stn visualize``: what a trained spatial transformer does (the paper's Table 1, right), and an animation of
it over training."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stn.cli._options import add_data_options, add_device_option, positive_int

_EXAMPLES = """examples:
  stn visualize runs/rts-st-cnn-aff-seed0/checkpoint.pt --out fig.png
  stn visualize runs/rts-st-cnn-aff-seed0/checkpoint.pt --data rts --out fig.png --num 10 --gif
  stn visualize runs/rts-st-cnn-aff-seed0/checkpoint.pt --curves --out fig.png   # also the training curves
"""


def _visualize(args: argparse.Namespace) -> int:
    from stn import viz
    from stn.cli.eval import load_test_set
    from stn.engine.checkpoint import CheckpointError, load_model
    from stn.engine.trainer import resolve_device

    out = Path(args.out)
    try:
        device = resolve_device(args.device)
        model, checkpoint = load_model(args.checkpoint, device)
        test = load_test_set(checkpoint, args)
        images = test.epoch_tensors(0, device)[0][args.first : args.first + args.num]
        title = f"{checkpoint['model_name']} on {test.variant}, step {checkpoint['step']}"
        print(f"wrote {viz.plot_model_transformations(model, images, out, title)}")
        if args.gif:
            print(f"wrote {viz.training_gif(model, checkpoint['theta_history'], out.with_suffix('.gif'))}")
        if args.curves:
            curves = out.with_name(f"{out.stem}-curves.png")
            print(f"wrote {viz.plot_curves(checkpoint['history'], curves, title)}")
    except (CheckpointError, FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from stn.data import VARIANTS

    p = subparsers.add_parser(
        "visualize",
        help="figure of the learnt transformations (inputs, sampling grids, outputs)",
        description="For a batch of test digits: the input, the sampling grid T_θ(G) drawn on the input (red: "
        "its border) and the transformer's output, as in the paper's Table 1 (right). --gif animates the "
        "transformations over training from the θ the trainer kept every epoch.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a checkpoint.pt of a model with a spatial transformer")
    p.add_argument("--out", required=True, help="PNG to write (the GIF goes beside it, with suffix .gif)")
    p.add_argument(
        "--data",
        type=str.lower,
        choices=VARIANTS,
        default=None,
        help="test digits of this variant (default: the one it was trained on)",
    )
    p.add_argument("--num", type=positive_int, default=8, help="digits to show (default 8, at most 10 drawn)")
    p.add_argument("--first", type=int, default=0, help="index of the first test digit shown (default 0)")
    p.add_argument("--gif", action="store_true", help="also write an animation over training epochs")
    p.add_argument("--curves", action="store_true", help="also write the training curves (<out>-curves.png)")
    add_data_options(p)
    add_device_option(p)
    p.set_defaults(func=_visualize)
