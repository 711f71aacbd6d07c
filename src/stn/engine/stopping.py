"""How a run ends: :class:`TrainResult` (finished, or interrupted by a signal), and :class:`StopOnSignal`, which
turns the first SIGINT / SIGTERM into a request to stop after the current step, so that the loop saves a checkpoint
and a job scheduler's SIGTERM loses nothing (docs/training.md, "Ctrl-C and SIGTERM").

Example:
    >>> from pathlib import Path
    >>> TrainResult(Path("runs/x"), "interrupted", 40, 100, signal=15).finished
    False
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

__all__ = ["StopOnSignal", "TrainResult"]


@dataclass
class TrainResult:
    """How :meth:`Trainer.fit` ended: ``status`` is ``"finished"`` or ``"interrupted"`` (then ``signal`` is set)."""

    run_dir: Path
    status: str
    step: int
    total_steps: int
    summary: dict[str, Any] = field(default_factory=dict)
    signal: int | None = None
    is_main: bool = True  # False in the other processes of a data-parallel run

    @property
    def finished(self) -> bool:
        return self.status == "finished"


class StopOnSignal:
    """Turns the first SIGINT / SIGTERM into a request to stop after the current step; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        tqdm.write(
            f"{signal.Signals(signum).name} received: saving a checkpoint after this step "
            "(Ctrl-C again aborts without saving)"
        )

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
