"""The training engine: one loop (:class:`Trainer`) for every experiment and for a user's own model and data
(docs/training.md). Names are imported on first use, so that ``import stn.engine.options`` (the command line's
parser) stays light.

Example:
    >>> from stn.engine import ClassificationTask, TrainConfig
    >>> TrainConfig(iterations=10).iterations, ClassificationTask(10).primary
    (10, 'error')
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config",
    "Preset": "config",
    "Task": "tasks",
    "ClassificationTask": "tasks",
    "SequenceTask": "tasks",
    "RegressionTask": "tasks",
    "TripletTask": "tasks",
    "task_from_spec": "tasks",
    "Trainer": "trainer",
    "TrainResult": "stopping",
    "evaluate": "evaluation",
    "run_status": "rundir",
    "read_run_config": "rundir",
    "read_summary": "rundir",
    "resolve_device": "distributed",
    "NonFiniteError": "guards",
    "RunRecord": "checkpoint",
    "Progress": "checkpoint",
    "Callback": "callbacks",
    "default_callbacks": "callbacks",
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_model": "checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stn.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"stn.engine.{_EXPORTS[name]}"), name)
