"""Choices made on validation data, never on the test set (issue #23's protocol).

A reproduction trains each cell with several seeds; the cell reports the mean ± sd of their test errors, and the
weights that ship are those of the seed with the lowest validation error (the last epoch's, as the runs report their
final model). :func:`choose_by_validation` is the one place that choice is made: it reads only ``val_*`` keys of the
runs' ``summary.json``, so a study cannot peek at the test split by accident.

Example:
    >>> runs = [{"seed": 0, "val_error": 0.012}, {"seed": 1, "val_error": 0.009}, {"seed": 2, "val_error": 0.010}]
    >>> choose_by_validation(runs)["seed"]
    1
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["VALIDATION_KEY", "best_mean_validation", "choose_by_validation", "has_validation", "mean_sd", "seed_cell"]

VALIDATION_KEY = "val_error"  # the last epoch's validation error, as the Trainer writes it in summary.json


def mean_sd(values: Sequence[float], digits: int = 2) -> str:
    """How a cell over seeds is reported: ``"mean ± sd"`` (the sample sd), one value alone, ``"—"`` for none.

    Example:
        >>> mean_sd([1.0, 1.5, 2.0]), mean_sd([0.714]), mean_sd([])
        ('1.50 ± 0.50', '0.71', '—')
    """
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def has_validation(summary: Mapping[str, Any]) -> bool:
    """Whether a run held out validation data (runs made before the protocol trained on every training digit)."""
    return summary.get(VALIDATION_KEY) is not None


def choose_by_validation(summaries: Sequence[Mapping[str, Any]], key: str = VALIDATION_KEY) -> Mapping[str, Any]:
    """The run with the lowest validation error ``key`` (ties: the lowest seed); only ``key`` and ``seed`` are read.

    Raises:
        ValueError: no runs, a ``key`` that is not a validation key, or a run without a validation error (it
            trained on every training digit, so nothing can be chosen on held-out data).
    """
    if not key.startswith("val_"):
        raise ValueError(f"choices are made on validation metrics (val_*), not on {key!r}")
    if not summaries:
        raise ValueError("no runs to choose from")
    missing = [s.get("seed") for s in summaries if s.get(key) is None]
    if missing:
        raise ValueError(
            f"the runs of seeds {missing} hold no {key}: they trained without validation data, so none can be "
            "chosen on it (train with --validation)"
        )
    return min(summaries, key=lambda s: (s[key], s.get("seed", 0)))


def seed_cell(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One model's runs over seeds (their ``summary.json``), as a reproduction's table reports them, in %:
    ``seeds``, ``test_errors``, their ``test_error`` mean and ``test_error_sd`` (None for one seed), ``val_errors``
    and the ``shipped_seed`` chosen on them by :func:`choose_by_validation` (both None when a run held no
    validation digits out).

    Example:
        >>> runs = [{"seed": 0, "test_error": 0.02, "val_error": 0.03}, {"seed": 1, "test_error": 0.04, "val_error": 0}]
        >>> cell = seed_cell(runs)
        >>> cell["test_errors"], round(cell["test_error"], 6), cell["shipped_seed"]
        ([2.0, 4.0], 3.0, 1)
    """
    errors = [100 * r["test_error"] for r in runs]
    validated = all(has_validation(r) for r in runs)
    return {
        "seeds": [r["seed"] for r in runs],
        "test_errors": errors,
        "test_error": statistics.mean(errors),
        "test_error_sd": statistics.stdev(errors) if len(errors) > 1 else None,
        "val_errors": [100 * r[VALIDATION_KEY] for r in runs] if validated else None,
        "shipped_seed": choose_by_validation(runs)["seed"] if validated else None,
    }


def best_mean_validation(
    arms: Mapping[str, Sequence[Mapping[str, Any]]], key: str = VALIDATION_KEY
) -> tuple[str, float] | None:
    """The arm (of a study: recipes, widths...) whose runs have the lowest mean validation error ``key``, and that
    mean; None when no arm has a run with one. Arms with a run lacking ``key`` are left out (they trained without
    validation data), and only ``key`` is read.

    Example:
        >>> best_mean_validation({"step": [{"val_error": 0.03}], "cosine": [{"val_error": 0.02}, {"val_error": 0.024}]})
        ('cosine', 0.022)
    """
    if not key.startswith("val_"):
        raise ValueError(f"choices are made on validation metrics (val_*), not on {key!r}")
    means = {
        arm: sum(r[key] for r in runs) / len(runs)
        for arm, runs in arms.items()
        if runs and all(r.get(key) is not None for r in runs)
    }
    if not means:
        return None
    arm = min(means, key=lambda a: (means[a], list(arms).index(a)))
    return arm, means[arm]
