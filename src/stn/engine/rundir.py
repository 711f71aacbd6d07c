"""The run folder's rules: which folder a run may write, and what a folder holds, new, done or to resume.

A run folder is recognised by its own record: ``checkpoint.pt``, or a ``config.json`` in stn's layout
(:meth:`~stn.engine.checkpoint.RunRecord.run_config`). A non-empty folder with neither is someone else's, and a
run refuses to write there unless forced (:func:`check_run_folder`), so that ``--out .`` never overwrites a
user's own ``config.json`` or ``summary.md``. :func:`run_status` is the one rule for "already done / resume";
:func:`checkpoint_to_resume` and :func:`check_same_run` are the refusals of :class:`~stn.engine.trainer.Trainer`.

Example:
    >>> import tempfile
    >>> from stn.engine.config import TrainConfig
    >>> folder = Path(tempfile.mkdtemp())
    >>> run_status(folder / "run", TrainConfig()), is_run_folder(folder)
    ('new', False)
    >>> _ = (folder / "notes.txt").write_text("mine")
    >>> check_run_folder(folder)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileExistsError: ... is not an stn run folder ...
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stn.data.specs import spec_differences
from stn.engine.checkpoint import CHECKPOINT_FILE, CheckpointError, RunRecord
from stn.engine.config import RESUMABLE_FIELDS, TrainConfig
from stn.io import LOCK_FILE, write_text_atomic
from stn.numerics import numerics_fingerprint

if TYPE_CHECKING:
    from stn.engine.trainer import Trainer

__all__ = [
    "CONFIG_FILE",
    "SUMMARY_FILE",
    "check_run_folder",
    "check_same_run",
    "checkpoint_to_resume",
    "is_run_folder",
    "read_run_config",
    "read_summary",
    "run_status",
    "run_summary",
    "write_run_config",
    "write_summary",
]

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` holds an stn run: its ``checkpoint.pt``, or a ``config.json`` in stn's layout."""
    path = Path(path)
    if (path / CHECKPOINT_FILE).is_file():
        return True
    try:
        RunRecord.from_run_config(json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def check_run_folder(run_dir: str | Path, *, force: bool = False) -> None:
    """Refuse to write a run into ``run_dir`` when it is a non-empty folder that is not an stn run (stn's own lock
    and temporary files aside), unless ``force``.

    Raises:
        FileExistsError: someone else's folder; the message says how to go on. ``run_dir`` is left untouched.
        NotADirectoryError: ``run_dir`` is a file.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"{run_dir} is a file, not a run folder; choose another --out")
    if force or not run_dir.is_dir() or is_run_folder(run_dir):
        return
    others = sorted(p.name for p in run_dir.iterdir() if not _stn_file(p.name))
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise FileExistsError(
            f"{run_dir} is not an stn run folder but holds other files ({shown}), which a run would overwrite; "
            "choose another --out (a new or empty folder), or pass --force to write there anyway"
        )


def _stn_file(name: str) -> bool:
    """The lock and the temporary files (``.<name>.<pid>.tmp``) a run leaves before its record."""
    return name == LOCK_FILE or (name.startswith(".") and name.endswith(".tmp"))


def read_run_config(run_dir: str | Path) -> RunRecord:
    """The record in a run folder's ``config.json`` (its recipe checked to be a valid ``TrainConfig``).

    Raises:
        FileNotFoundError: no ``config.json`` there.
        ValueError: it is damaged (the message names the file).
    """
    path = Path(run_dir) / CONFIG_FILE
    try:
        record = RunRecord.from_run_config(json.loads(path.read_text(encoding="utf-8")))
        record.train_config()
    except FileNotFoundError:
        raise FileNotFoundError(f"no run in {run_dir}: {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is damaged: not valid JSON ({err}); fix or delete it, or use another folder"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is damaged ({err}); fix or delete it, or use another folder") from None
    return record


def write_run_config(run_dir: str | Path, record: RunRecord) -> Path:
    """Write ``config.json`` (atomically): the record of the run in ``run_dir``."""
    return write_text_atomic(Path(run_dir) / CONFIG_FILE, json.dumps(record.run_config(), indent=2) + "\n")


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The ``summary.json`` a finished run wrote."""
    return json.loads((Path(run_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))


def run_summary(trainer: Trainer, *, elapsed: float) -> dict[str, Any]:
    """What ``summary.json`` says of ``trainer``'s finished run (``elapsed``: its wall-clock seconds): the model,
    data, task, seed, size, steps, the last epoch's train and test metrics, time and throughput, the command and
    the numerics it ran under (:func:`stn.numerics.numerics_fingerprint`: which CPU and kernels, so a reader knows
    where its floats repeat bit for bit); with a validation set also the last epoch's ``val_<metric>`` and the
    best epoch's (``best_val_<primary>``, ``best_val_epoch``)."""
    history, task = trainer.history, trainer.task
    last = history[-1] if history else {}
    summary = {
        "title": trainer.title,
        "model": trainer.model_spec["name"],
        "data": trainer.data_spec,
        "source": getattr(trainer.train_data, "source", None),
        "task": task.name,
        "primary": task.primary,
        "seed": trainer.config.seed,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "steps": trainer.step,
        "epochs": len(history),
        "train_samples": len(trainer.train_data),
        "test_samples": len(trainer.eval_data),
        **{f"test_{m}": last.get(f"test_{m}") for m in task.metrics},
        **{f"train_{m}": last.get(f"train_{m}") for m in task.metrics},
        "time_s": elapsed,
        "images_per_s": trainer.step * trainer.config.batch_size / max(trainer.train_time, 1e-9),
        "command": trainer.command,
        "numerics": numerics_fingerprint(),  # the CPU, kernels and threads its floats repeat under bit for bit
    }
    key = f"val_{task.primary}"
    scored = [r for r in history if r.get(key) is not None]
    if trainer.val_data is not None and scored:
        best = min(scored, key=lambda r: r[key])
        summary |= {f"val_{m}": last.get(f"val_{m}") for m in task.metrics} | {"val_samples": len(trainer.val_data)}
        summary |= {f"best_{key}": best[key], "best_val_epoch": best["epoch"]}
    return summary


def write_summary(run_dir: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json`` (atomically): what a finished run reports."""
    return write_text_atomic(Path(run_dir) / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")


def run_status(
    run_dir: str | Path,
    config: TrainConfig,
    data_spec: Mapping[str, Any] | None = None,
    model_options: Mapping[str, Any] | None = None,
) -> str:
    """The one rule for a run folder: ``"new"`` (neither a checkpoint nor a finished run), ``"done"`` (a finished
    run, its ``summary.json``, of the same recipe, data, length and ``model_options``, the factory arguments the
    caller chose: nothing to do) or ``"resume"`` (anything else; the :class:`~stn.engine.trainer.Trainer` then
    refuses, with :class:`~stn.engine.checkpoint.CheckpointError`, a checkpoint made with another model, task,
    recipe or data, and with ``FileExistsError`` a finished run whose checkpoint is gone).

    A finished run stays ``"done"`` without its ``checkpoint.pt`` (the results folders in git keep none), so
    running a results command again never retrains and overwrites it. ``config.json`` is read, so a damaged one
    raises ``ValueError`` naming it.
    """
    run_dir = Path(run_dir)
    if not (run_dir / SUMMARY_FILE).is_file():
        return "resume" if (run_dir / CHECKPOINT_FILE).is_file() else "new"
    saved = read_run_config(run_dir)
    same_recipe = not saved.train_config().differences(config, ignore=RESUMABLE_FIELDS - {"epochs", "iterations"})
    same_data = data_spec is None or not spec_differences(saved.data, data_spec)
    kwargs = saved.model_kwargs
    same_model = all(k in kwargs and kwargs[k] == v for k, v in (model_options or {}).items())
    return "done" if same_recipe and same_data and same_model else "resume"


def checkpoint_to_resume(run_dir: str | Path, resume: bool) -> Path | None:
    """The checkpoint a run in ``run_dir`` continues from (None: it starts afresh).

    Raises:
        FileExistsError: the folder holds a run and ``resume`` is false, or it holds a finished run whose
            checkpoint is gone (it can be neither continued nor replaced in place).
    """
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        if (run_dir / SUMMARY_FILE).is_file():  # a finished run kept without its checkpoint (results/)
            raise FileExistsError(
                f"{run_dir} holds a finished run whose {CHECKPOINT_FILE} is gone, so it can be neither "
                "continued nor replaced in place; choose another --out, or delete the folder to train it afresh"
            )
        return None
    if not resume:
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    return path


def check_same_run(path: Path, state: Mapping[str, Any], record: RunRecord) -> None:
    """Refuse to resume the checkpoint ``state`` (read from ``path``) as the run ``record``: every difference of
    model (name or arguments), task, recipe (but :data:`~stn.engine.config.RESUMABLE_FIELDS`) or data (but its
    location) is named.

    Raises:
        CheckpointError: the checkpoint is another run, or its recipe is unreadable.
    """
    saved = RunRecord.of(state)
    try:
        differences = saved.train_config().differences(record.train_config())
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} holds an unreadable configuration: {err}") from err
    was = {"model": (saved.model_name, saved.model_kwargs), "task": saved.task}
    now = {"model": (record.model_name, record.model_kwargs), "task": record.task}
    differences |= {key: (was[key], now[key]) for key in now if was[key] != now[key]}
    differences |= {f"data.{k}": v for k, v in spec_differences(saved.data, record.data).items()}
    if differences:
        listed = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differences.items())
        raise CheckpointError(f"cannot resume {path} with another configuration ({listed})")
