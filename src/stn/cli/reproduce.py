"""``stn reproduce <experiment>``: one sub-command per experiment of :mod:`stn.experiments`."""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

_EXAMPLES = """examples:
  stn reproduce table1 --data RTS --budget quick
  stn reproduce table1 --help
"""


def _run(module: ModuleType, args: argparse.Namespace) -> int:
    from stn.engine.checkpoint import CheckpointError

    try:
        return int(module.run(args) or 0)
    except (CheckpointError, FileExistsError, FileNotFoundError, ImportError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _unavailable(name: str, reason: Exception, _args: argparse.Namespace) -> int:
    print(f"error: experiment {name!r} cannot run here: {reason}", file=sys.stderr)
    return 1


def register(subparsers: argparse._SubParsersAction) -> None:
    from stn import experiments

    parser = subparsers.add_parser(
        "reproduce",
        help="reproduce an experiment of the paper (tables, figures)",
        description="Reproduce an experiment of the paper. Each writes its table with our numbers beside the "
        "paper's; finished runs are skipped, so an interrupted reproduction continues where it stopped.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="experiment", required=True, metavar="{" + ",".join(experiments.names()) + "}")
    for name in experiments.names():
        try:
            module = experiments.load(name)
        except ImportError as err:
            broken = sub.add_parser(name, help=f"(unavailable: {err})")
            broken.set_defaults(func=lambda args, name=name, err=err: _unavailable(name, err, args))
            continue
        doc = (module.__doc__ or name).strip()
        p = sub.add_parser(
            name, help=doc.splitlines()[0], description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(p)
        p.set_defaults(func=lambda args, module=module: _run(module, args))
