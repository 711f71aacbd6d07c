"""The ``stn`` command. Each sub-command lives in its own module of this package, which exposes
``register(subparsers)`` adding its parser(s) with ``set_defaults(func=handler)``; ``handler(args)``
returns the exit code."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules of this package that contribute sub-commands, in the order ``stn --help`` lists them.
_COMMAND_MODULES: tuple[str, ...] = ("data", "train", "eval", "reproduce", "visualize", "export", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stn",
        description="Spatial Transformer Networks: train, evaluate, visualise and reproduce the paper.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"stn.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
