"""``stn reproduce <experiment>``: one sub-command per experiment of :mod:`stn.experiments`."""

from __future__ import annotations

import argparse
from types import ModuleType

_EXAMPLES = """examples:
  stn reproduce table1 --data RTS --budget quick
  stn reproduce table1 --help
"""


def _run(module: ModuleType, args: argparse.Namespace) -> int:
    # User errors reach stn.cli.main, which prints them as one line like every command's.
    return int(module.run(args) or 0)


def _unavailable(name: str, reason: Exception, _args: argparse.Namespace) -> int:
    from stn.cli.base import CommandError

    raise CommandError(f"experiment {name!r} cannot run here: {reason}")


def register(subparsers: argparse._SubParsersAction) -> None:
    from stn import experiments
    from stn.cli.base import COMMANDS

    parser = subparsers.add_parser(
        "reproduce",
        help=COMMANDS["reproduce"],
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
