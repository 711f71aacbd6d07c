"""Fixtures of the experiment tests."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest


@pytest.fixture
def as_a_non_main_process(monkeypatch: pytest.MonkeyPatch) -> Callable[[ModuleType], list[str]]:
    """``trained = as_a_non_main_process(experiment)``: the experiment's ``trained_model`` then behaves as in a
    process of a data-parallel run other than the main one (it gets None back after training) and records the label
    of every run it was asked to train in ``trained``."""

    def patch(experiment: ModuleType) -> list[str]:
        trained: list[str] = []

        def not_the_main_process(label: str, *args: object, **kwargs: object) -> None:
            trained.append(label)

        monkeypatch.setattr(experiment, "trained_model", not_the_main_process)
        return trained

    return patch
