"""Ceilings of the command-line options that size memory, checked when the command line is parsed.

Without them a typo is an out-of-memory crash minutes later (``stn data preview --n 100000`` used 9.7 GB and
had not finished after 10 minutes). Every option below is bounded wherever it is declared (``stn train``,
``stn eval``, ``stn demo``, every ``stn reproduce`` experiment...): :func:`bound_sizes` wraps its argparse
``type`` so that a value above the ceiling is a one-line usage error naming the ceiling, before any work starts,
and adds the ceiling to its help.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="stn data preview")
    >>> _ = parser.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    >>> bound_sizes(parser)
    >>> parser.parse_args(["--n", "100"]).n
    100
    >>> parser._option_string_actions["--n"].help
    'number of samples (default 64, at most 400)'
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["LIMITS", "bound_sizes"]

# option -> (ceiling, why). Options of the same name mean the same quantity in every command that has one.
LIMITS: dict[str, tuple[int, str]] = {
    "--n": (400, "a contact sheet of 20 x 20 samples; each is a subplot held in memory"),
    "--num": (10, "the figure draws at most 10 samples"),
    "--batch-size": (16_384, "a batch and its activations are held in memory at once"),
    "--num-train": (240_000, "4x MNIST's 60,000 training digits; an epoch's samples are generated and held in memory"),
    "--num-test": (10_000, "MNIST's test split holds 10,000 digits; the test set is held in memory"),
    "--num-val": (59_999, "validation digits are held out of MNIST's 60,000 training digits"),
    "--num-workers": (64, "each data-loading worker is a process with its own copy of the dataset"),
    "--target-params": (20_000_000, "the model is held in memory with its gradients and optimiser state"),
    "--num-images": (500, "the crop search embeds every candidate crop of 2 x N images per class"),
    "--input-size": (1_024, "memory grows with the square of the input size"),
    "--figure-images": (64, "images drawn in one figure"),
}


def _bounded(parse: Callable[[str], Any], option: str, ceiling: int, why: str) -> Callable[[str], Any]:
    """``parse`` that refuses a value above ``ceiling`` (argparse reports it as a one-line usage error)."""

    def parse_bounded(text: str) -> Any:
        value = parse(text)
        if isinstance(value, int) and value > ceiling:
            raise argparse.ArgumentTypeError(f"at most {ceiling:,} ({why}), got {text}")
        return value

    parse_bounded.__name__ = getattr(parse, "__name__", option)  # argparse names the type in its messages
    return parse_bounded


def _with_ceiling(help_text: str | None, ceiling: int) -> str | None:
    """``help_text`` mentioning the ceiling: ``"... (default 64, at most 400)"``, else ``"...; at most 400"``."""
    if help_text is None or help_text == argparse.SUPPRESS:
        return help_text
    if help_text.endswith(")") and help_text[help_text.rfind("(") :].startswith("(default"):
        return f"{help_text[:-1]}, at most {ceiling:,})"
    if help_text.startswith("default") and "(" not in help_text:
        return f"{help_text}, at most {ceiling:,}"
    return f"{help_text}; at most {ceiling:,}"


def bound_sizes(parser: argparse.ArgumentParser) -> None:
    """Bound every option of ``parser`` and of its sub-commands' parsers named in :data:`LIMITS`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                bound_sizes(child)
            continue
        names = [name for name in action.option_strings if name in LIMITS]
        if not names or getattr(action.type, "stn_ceiling", None) is not None:
            continue
        ceiling, why = LIMITS[names[0]]
        action.type = _bounded(action.type or int, names[0], ceiling, why)
        action.type.stn_ceiling = ceiling  # type: ignore[attr-defined]
        action.help = _with_ceiling(action.help, ceiling)
