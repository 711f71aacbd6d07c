"""Run folders given to the commands that read a trained model (``stn eval``, ``stn visualize``, ``stn export``).

A folder that holds runs rather than being one (``runs/demo``, with ``runs/demo/cnn`` and
``runs/demo/st-cnn-aff``) is refused naming the runs inside, instead of a bare ``no checkpoint at
runs/demo/checkpoint.pt``.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> demo = Path(tempfile.mkdtemp()) / "demo"
    >>> for name in ("cnn", "st-cnn-aff"):
    ...     (demo / name).mkdir(parents=True)
    ...     _ = (demo / name / "summary.json").write_text("{}")
    >>> [p.name for p in runs_in(demo)]
    ['cnn', 'st-cnn-aff']
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["refuse_a_folder_of_runs", "runs_in"]

# What marks a folder as a run: its checkpoint, or the summary a finished run writes.
_RUN_FILES = ("checkpoint.pt", "summary.json")
_SHOWN = 10


def _is_run(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _RUN_FILES)


def runs_in(folder: str | os.PathLike, depth: int = 2) -> list[Path]:
    """The run folders under ``folder`` (itself excluded), at most ``depth`` levels down, sorted."""
    found: list[Path] = []
    try:
        children = sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:  # not a folder, or unreadable: nothing to list
        return found
    for child in children:
        if _is_run(child):
            found.append(child)
        elif depth > 1:
            found.extend(runs_in(child, depth - 1))
    return found


def refuse_a_folder_of_runs(path: str | os.PathLike) -> None:
    """Raise ``FileNotFoundError`` naming the runs inside ``path`` when ``path`` is a folder that is not a run
    itself but holds runs; return otherwise (the caller then reads ``path`` as a run folder or checkpoint)."""
    folder = Path(path)
    if not folder.is_dir() or _is_run(folder):
        return
    runs = runs_in(folder)
    if runs:
        shown = ", ".join(str(p) for p in runs[:_SHOWN])
        more = f" and {len(runs) - _SHOWN} more" if len(runs) > _SHOWN else ""
        runs_text = "a run" if len(runs) == 1 else f"{len(runs)} runs"
        raise FileNotFoundError(f"{folder} holds no checkpoint.pt but {runs_text}: {shown}{more}; give one of them")
