"""The ``stn`` command. Each sub-command lives in its own module of this package, which exposes
``register(subparsers)`` adding its parser(s) with ``set_defaults(func=handler)``; ``handler(args)``
returns the exit code.

Start-up stays fast: ``stn --help`` imports no sub-command module (it lists the names and one-line summaries
of :data:`COMMANDS`), and ``stn <command> ...`` imports only that command's module, whose ``register`` keeps
its heavy imports inside the handler.

:func:`main` turns the user errors of every command (bad values, missing or corrupt files, a locked run folder,
a missing optional package, Ctrl-C) into one line on stderr, ``stn <command>: error: <message>``, and a
non-zero exit; other exceptions are bugs and keep their traceback. ``STN_DEBUG=1`` re-raises everything.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from stn.cli.base import COMMANDS, CommandError

__all__ = ["COMMANDS", "CommandError", "build_parser", "main"]

# Top-level package of a missing module -> the extra of pyproject.toml that installs it.
EXTRAS: dict[str, str] = {
    "onnx": "export",
    "onnxruntime": "export",
    "onnxscript": "export",
    "h5py": "svhn",
    "timm": "cub",
    "tensorboard": "tensorboard",
    "mlxtend": "sample",
}

_EPILOG = """examples:
  stn demo                                   # the paper's main point in minutes on a CPU
  stn data download                          # full MNIST into ~/.cache/stn
  stn train --data rts --model st-cnn-aff
  stn reproduce table1 --budget quick
  stn <command> --help                       # the options of a command

environment:
  STN_DATA=<folder>   where MNIST is looked for when --data-dir is not given
  STN_DEBUG=1         show the full traceback of errors instead of one line
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line too (argparse would print the whole usage first); exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``stn`` parser.

    Args:
        commands: the sub-commands whose full parsers are built (importing their modules); default all. The
            others get only their name and one-line summary, which is all ``stn --help`` shows.
    """
    full = set(COMMANDS if commands is None else commands)
    parser = _Parser(
        prog="stn",
        description="Spatial Transformer Networks: train, evaluate, visualise and reproduce the paper.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if name in full:
            importlib.import_module(f"stn.cli.{name}").register(sub)
        else:
            sub.add_parser(name, help=summary)
    _plain_help(parser)
    from stn.cli._limits import bound_sizes

    bound_sizes(parser)  # the options that size memory get their ceilings
    return parser


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Help texts without reST markup, whatever docstring they came from (see :func:`stn.cli._help.plain`)."""
    from stn.cli._help import plain

    parser.description = parser.description and plain(parser.description)
    parser.epilog = parser.epilog and plain(parser.epilog)
    for action in parser._actions:
        if isinstance(action.help, str) and action.help != argparse.SUPPRESS:
            action.help = plain(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = choice.help and plain(choice.help)
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                _plain_help(child)


def _command(argv: Sequence[str]) -> str | None:
    # The top-level parser has no option taking a value, so its first positional is the sub-command.
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _prog(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """``stn data preview``, ``stn reproduce table1``, ...: the chosen (sub-)sub-command."""
    names = [parser.prog]
    while True:
        action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = None if action is None else getattr(args, action.dest, None)
        if name is None:
            return " ".join(names)
        names.append(name)
        parser = action.choices[name]


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text.strip())


def _missing_module(err: ImportError) -> str | None:
    for e in (err, err.__cause__):
        if isinstance(e, ImportError) and e.name:
            return e.name
    return None


def _describe(err: BaseException) -> str:
    """The message of a user error."""
    if isinstance(err, ImportError):
        module = _missing_module(err)
        extra = EXTRAS.get((module or "").partition(".")[0])
        if extra is not None:
            return f'this needs the Python package {module!r}, which is missing: pip install "stn[{extra}]"'
    if isinstance(err, json.JSONDecodeError):
        return f"invalid JSON ({err})"
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        where = err.filename if err.filename2 is None else f"{err.filename} -> {err.filename2}"
        return f"{where}: {err.strerror}"
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]  # str(KeyError) would quote it
    return str(err) or type(err).__name__


def _user_errors() -> tuple[type[BaseException], ...]:
    from stn.io import RunLockedError

    # ValueError covers IDXError, CheckpointError and json.JSONDecodeError; OSError the missing, existing,
    # unreadable and misplaced files (FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError...),
    # a full disk and a dead torchrun peer (stn.engine.distributed.PeerLostError).
    errors: tuple[type[BaseException], ...] = (CommandError, ValueError, TypeError, KeyError, OSError, ImportError)
    guards = sys.modules.get("stn.engine.guards")  # a run that stopped on a non-finite loss (--on-nan stop)
    return (*errors, RunLockedError, *((guards.NonFiniteError,) if guards is not None else ()))


@contextmanager
def _warnings_as_lines(prog: str) -> Iterator[None]:
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {_one_line(str(message))}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``stn`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("STN_DEBUG", "") not in ("", "0")
    command = _command(argv)
    prog = "stn" if command not in COMMANDS else f"stn {command}"
    try:
        parser = build_parser([command] if command in COMMANDS else [])
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        prog = _prog(parser, args)
        with _warnings_as_lines(prog):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug or not isinstance(err, _user_errors()):
            raise
        print(f"{prog}: error: {_one_line(_describe(err))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
