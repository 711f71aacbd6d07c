"""Checkpoint files and the run record: one format for every run (its keys: docs/training.md, "Checkpoints"),
written atomically (:func:`stn.io.atomic_path`) and checked on load, so that a crash never leaves half a checkpoint
and a wrong file fails with a clear message.

The schema lives here, writer beside reader: :class:`RunRecord` is what a run *is* (the
:func:`stn.models.create_model` call with every argument, defaults included, so :func:`build_model` guesses
nothing; the task, the data spec, the recipe), held by every checkpoint, by the run folder's ``config.json`` and by
a pretrained-weights entry; :class:`Progress` is where the run stands (steps, history, θ history);
:func:`checkpoint_state` puts both together with the weights and the training loop's own state. Code that reads a
checkpoint reads it through these, never by its keys.

Example:
    >>> import tempfile
    >>> from stn.models import create_model
    >>> path = Path(tempfile.mkdtemp()) / "checkpoint.pt"
    >>> model = create_model("cnn", in_shape=(1, 28, 28))
    >>> record = RunRecord("cnn", {"in_shape": (1, 28, 28)})
    >>> _ = save_checkpoint(checkpoint_state(record, model.state_dict(), Progress(step=0)), path)
    >>> rebuilt, checkpoint = load_model(path.parent)  # a run folder works too
    >>> Progress.of(checkpoint).step, RunRecord.of(checkpoint).model_name, type(rebuilt).__name__
    (0, 'cnn', 'DigitClassifier')
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from stn.io import atomic_path

if TYPE_CHECKING:
    from stn.engine.config import TrainConfig
    from stn.engine.trainer import Trainer

__all__ = [
    "CHECKPOINT_FILE",
    "FORMAT",
    "THETA_HISTORY",
    "VERSION",
    "CheckpointError",
    "Progress",
    "RunRecord",
    "build_model",
    "checkpoint_path",
    "checkpoint_state",
    "load_checkpoint",
    "load_model",
    "restore_trainer",
    "save_checkpoint",
    "trainer_checkpoint",
]

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "stn-checkpoint"
VERSION = 2
THETA_HISTORY = "theta_history"  # the key of stn.engine.callbacks.ThetaHistory's state
_REQUIRED = ("model_name", "model_kwargs", "model", "step")
# what torch.save says when a write falls short (it does not pass on the errno)
_SHORT_WRITE = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


class CheckpointError(ValueError):
    """A checkpoint file that is corrupt, not an ``stn`` checkpoint, or incompatible with the request."""


@dataclass(frozen=True)
class RunRecord:
    """What a run is: the model's :func:`~stn.models.create_model` call, the task spec, the data spec, the recipe.

    Every checkpoint holds it (flat keys, :meth:`entry`), so does a pretrained-weights entry (the same keys), and
    the run folder's ``config.json`` (:meth:`run_config`). ``input_shape`` (one sample's shape) and ``source``
    (which MNIST the data came from) are known to checkpoints and entries only.

    Example:
        >>> record = RunRecord("cnn", {"in_shape": (1, 28, 28)}, {"name": "classification", "num_classes": 10})
        >>> RunRecord.from_run_config(record.run_config()) == record
        True
        >>> sorted(record.run_config())
        ['config', 'data', 'model', 'task']
    """

    model_name: str
    model_kwargs: dict[str, Any]
    task: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # TrainConfig.to_dict()
    input_shape: tuple[int, ...] | None = None
    source: str | None = None

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> RunRecord:
        """The record of a checkpoint (or of a pretrained-weights entry); what it lacks is left empty
        (:func:`load_checkpoint` checks that a checkpoint has its model)."""
        shape = entry.get("input_shape")
        return cls(
            model_name=entry.get("model_name", ""),
            model_kwargs=dict(entry.get("model_kwargs") or {}),
            task=entry.get("task"),
            data=dict(entry.get("data") or {}),
            config=dict(entry.get("config") or {}),
            input_shape=tuple(shape) if shape else None,
            source=entry.get("source"),
        )

    def entry(self) -> dict[str, Any]:
        """The record's keys in a checkpoint (and in a pretrained-weights entry)."""
        return {
            "config": self.config,
            "model_name": self.model_name,
            "model_kwargs": self.model_kwargs,
            "input_shape": self.input_shape,
            "task": self.task,
            "data": self.data,
            "source": self.source,
        }

    @classmethod
    def from_run_config(cls, saved: Mapping[str, Any]) -> RunRecord:
        """The record in a run folder's ``config.json`` (:meth:`run_config`).

        Raises:
            KeyError, TypeError: not that layout.
        """
        model = saved["model"]
        return cls(
            model["name"],
            dict(model["kwargs"]),
            saved.get("task"),
            dict(saved.get("data") or {}),
            dict(saved["config"]),
        )

    def run_config(self) -> dict[str, Any]:
        """What ``config.json`` holds: ``{"config", "model": {"name", "kwargs"}, "task", "data"}``."""
        model = {"name": self.model_name, "kwargs": self.model_kwargs}
        return {"config": self.config, "model": model, "task": self.task, "data": self.data}

    def train_config(self) -> TrainConfig:
        """The recipe as a :class:`~stn.engine.config.TrainConfig` (``TrainConfig.from_dict``'s errors)."""
        from stn.engine.config import TrainConfig

        return TrainConfig.from_dict(self.config)


@dataclass(frozen=True)
class Progress:
    """Where a run stands in its checkpoint: ``step`` of ``total_steps``, whether it ``finished``, its per-epoch
    ``history`` (the records of ``metrics.jsonl``) and the ``theta_history`` of
    :class:`~stn.engine.callbacks.ThetaHistory` (None when the run kept none)."""

    step: int
    total_steps: int | None = None
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    theta_history: dict[str, Any] | None = None

    @classmethod
    def of(cls, checkpoint: Mapping[str, Any]) -> Progress:
        return cls(
            step=checkpoint["step"],
            total_steps=checkpoint.get("total_steps"),
            finished=bool(checkpoint.get("finished")),
            history=list(checkpoint.get("history") or []),
            theta_history=checkpoint.get(THETA_HISTORY) or None,
        )


def checkpoint_state(
    record: RunRecord,
    weights: Mapping[str, Tensor],
    progress: Progress,
    loop: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a checkpoint holds: the record, the model's ``weights``, the progress (its ``theta_history``
    is the :class:`~stn.engine.callbacks.ThetaHistory` callback's, which keeps it in ``loop`` under its key), and
    ``loop``, the training loop's own state (optimiser, scaler, RNG states, callbacks' states...: read back by the
    :class:`~stn.engine.trainer.Trainer` alone)."""
    return {
        **record.entry(),
        "model": weights,
        "step": progress.step,
        "total_steps": progress.total_steps,
        "history": progress.history,
        "finished": progress.finished,
        **(loop or {}),
    }


def trainer_checkpoint(trainer: Trainer, *, finished: bool, elapsed: float) -> dict[str, Any]:
    """The checkpoint of ``trainer`` now (:func:`checkpoint_state`), with the loop's own state: optimiser, AMP
    scaler, the current epoch's metric sums and times (``elapsed``: the run's wall-clock seconds), RNG states and
    the callbacks' states; :func:`restore_trainer` reads it back."""
    rng = {"cpu": torch.get_rng_state()}
    if trainer.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(trainer.device)
    loop = {
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "epoch_sums": trainer.epoch_sums.cpu(),
        "epoch_time": trainer.epoch_time,
        "train_time": trainer.train_time,
        "elapsed": elapsed,
        "rng": rng,
    }
    loop |= {c.key: c.state_dict() for c in trainer.callbacks if c.key is not None}
    progress = Progress(trainer.step, trainer.total_steps, finished, trainer.history)
    return checkpoint_state(trainer.record(), trainer.model.state_dict(), progress, loop)


def restore_trainer(trainer: Trainer, state: Mapping[str, Any], path: Path) -> Progress:
    """Put ``trainer`` where the checkpoint ``state`` (of :func:`trainer_checkpoint`, read from ``path``) left its
    run: weights, optimiser, loop, callbacks and RNG states. Returns the checkpoint's progress.

    Raises:
        CheckpointError: the weights or the optimiser's state do not fit.
    """
    progress = Progress.of(state)
    try:
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path} does not fit the model: {err}") from err
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.step, trainer.history = progress.step, progress.history
    trainer.epoch_sums = state["epoch_sums"].to(trainer.device)
    trainer.epoch_time, trainer.train_time, trainer.elapsed = state["epoch_time"], state["train_time"], state["elapsed"]
    for callback in trainer.callbacks:
        if callback.key is not None and callback.key in state:
            callback.load_state_dict(state[callback.key])
    torch.set_rng_state(state["rng"]["cpu"].cpu())
    if trainer.device.type == "cuda" and state["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), trainer.device)
    return progress


def checkpoint_path(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/checkpoint.pt`` when ``path`` is a run folder."""
    path = Path(path)
    return path / CHECKPOINT_FILE if path.is_dir() else path


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` (plus ``format`` / ``version``) to ``path`` atomically; returns the path.

    Raises:
        OSError: the file cannot be written; a full disk (or file-size limit) is said so, naming ``path`` (the
            previous file at ``path`` is left as it was).
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise _disk_full(path) from err
        raise
    except RuntimeError as err:
        if any(words in str(err) for words in _SHORT_WRITE):
            raise _disk_full(path) from err
        raise
    return path


def _disk_full(path: Path) -> OSError:
    return OSError(
        errno.ENOSPC,
        "cannot write the checkpoint: the disk is full (or a file-size limit was reached); the previous "
        "checkpoint, if any, is kept: free some space and run the same command again (with --resume) to continue",
        str(path),
    )


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save_checkpoint` (``path``: the file or its run folder).

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        CheckpointError: unreadable (truncated, corrupt), not an ``stn`` checkpoint, or of another version.
    """
    path = checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for damaged files (RuntimeError, EOFError, pickle errors)
        raise CheckpointError(f"cannot read checkpoint {path}: the file is corrupt or truncated ({err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an stn training checkpoint (expected format {FORMAT!r})")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {state.get('version')!r}; this stn reads version {VERSION} "
            "(retrain the model, or load the old file with the stn version that wrote it)"
        )
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return state


def build_model(checkpoint: dict[str, Any]) -> nn.Module:
    """The checkpoint's model, rebuilt by name with its recorded arguments and loaded with its weights.

    Raises:
        CheckpointError: the model cannot be built, or the weights do not fit it.
    """
    from stn.models import create_model
    from stn.models.registry import upgrade_kwargs

    record = RunRecord.of(checkpoint)
    name, kwargs = record.model_name, upgrade_kwargs(record.model_name, record.model_kwargs)
    try:
        model = create_model(name, **kwargs)
        model.load_state_dict(checkpoint["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        reason = " ".join(str(err).split())  # torch's multi-line messages, on one line
        raise CheckpointError(f"cannot rebuild model {name!r} with {kwargs} from the checkpoint: {reason}") from err
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """``(model in eval mode on device, checkpoint dict)`` from a checkpoint file or run folder."""
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint).to(device).eval()
    return model, checkpoint
