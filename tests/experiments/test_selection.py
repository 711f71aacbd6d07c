"""Choices are made on validation data: the selection never reads the test split."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from stn.experiments.selection import best_mean_validation, choose_by_validation, has_validation


class _NoTestPeeking(Mapping):
    """A summary whose test keys fail the test when read."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        if key.startswith("test_"):
            pytest.fail(f"the selection read {key!r}")
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_the_chosen_seed_has_the_lowest_validation_error_even_where_the_test_error_disagrees() -> None:
    runs = [
        _NoTestPeeking({"seed": 0, "val_error": 0.011, "test_error": 0.007}),
        _NoTestPeeking({"seed": 1, "val_error": 0.009, "test_error": 0.010}),
        _NoTestPeeking({"seed": 2, "val_error": 0.010, "test_error": 0.008}),
    ]
    assert choose_by_validation(runs)["seed"] == 1


def test_ties_go_to_the_lowest_seed() -> None:
    assert choose_by_validation([{"seed": 2, "val_error": 0.01}, {"seed": 1, "val_error": 0.01}])["seed"] == 1


def test_choosing_on_a_test_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="not on 'test_error'"):
        choose_by_validation([{"seed": 0, "test_error": 0.1}], key="test_error")


def test_runs_without_validation_cannot_be_chosen_on_it() -> None:
    old = {"seed": 0, "test_error": 0.007}  # trained on all 60,000 digits before the protocol
    assert not has_validation(old) and has_validation({"val_error": 0.01})
    with pytest.raises(ValueError, match="seeds \\[0\\] hold no val_error"):
        choose_by_validation([old, {"seed": 1, "val_error": 0.01}])
    with pytest.raises(ValueError, match="no runs"):
        choose_by_validation([])


def test_a_studys_arm_is_chosen_on_mean_validation_error_never_on_test() -> None:
    arms = {
        "step": [_NoTestPeeking({"val_error": 0.030, "test_error": 0.010})],
        "cosine": [_NoTestPeeking({"val_error": 0.020, "test_error": 0.030}), _NoTestPeeking({"val_error": 0.024})],
        "old": [_NoTestPeeking({"test_error": 0.001})],  # trained without validation: not a candidate
    }
    arm, mean = best_mean_validation(arms)
    assert arm == "cosine" and mean == pytest.approx(0.022)
    assert best_mean_validation({"old": [{"test_error": 0.001}]}) is None
    with pytest.raises(ValueError, match="not on 'test_error'"):
        best_mean_validation(arms, key="test_error")
