"""Files that never end up half-written, run folders that one process writes at a time, and the records (JSON
lines, CSV, Markdown tables) that runs and experiments write.

The single home of the library's file safety; everything that writes (checkpoints, metrics, figures, tables,
exports, caches, downloads) goes through :func:`atomic_path` or :func:`write_text_atomic`.

* :func:`atomic_path` yields a temporary path beside the destination (``.<name>.<pid>.tmp``, or
  ``.<hash of name>.<pid>.tmp`` for a name near the file system's limit); on success it is
  renamed over the destination in one ``os.replace``, on error it is removed. A reader therefore sees the old
  file or the new one, never a mixture, and a crash loses at most the write in progress.
* A process killed with ``kill -9`` cannot clean up; :func:`remove_stale_temp_files` removes the temporary files
  of processes that no longer exist (a run calls it when it starts).
* :class:`RunLock` marks a folder as being written by one process (``.lock`` holds its pid); a second writer
  fails at once naming the holder, and the lock of a process that died is taken over.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from stn.io import RunLock, write_text_atomic
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_text_atomic(folder / "a.txt", "hello").read_text()
    'hello'
    >>> with RunLock(folder):
    ...     (folder / ".lock").exists()
    True
    >>> (folder / ".lock").exists()
    False
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "RunLock",
    "RunLockedError",
    "atomic_path",
    "format_markdown_table",
    "markdown_table",
    "read_jsonl",
    "remove_stale_temp_files",
    "write_csv",
    "write_report",
    "write_text_atomic",
]

LOCK_FILE = ".lock"
_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.tmp$")


def _name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system of ``folder`` takes (255 where it does not say)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no such folder yet, no pathconf (Windows), or no limit
        return 255


def _temp_path(path: Path) -> Path:
    """``.<name>.<pid>.tmp`` beside ``path``; for a name too long for that, ``.<hash of the name>.<pid>.tmp``,
    so that a destination name near the file system's limit still gets a temporary file (both forms are the
    ones :func:`remove_stale_temp_files` recognises)."""
    name = f".{path.name}.{os.getpid()}.tmp"
    if len(os.fsencode(name)) > _name_max(path.parent):
        digest = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]
        name = f".{digest}.{os.getpid()}.tmp"
    return path.with_name(name)


def _naming(err: OSError, tmp: Path, path: Path) -> OSError:
    """``err`` naming the destination ``path`` where it named the temporary file (the user never chose that
    name); other errors unchanged."""
    if err.errno is None or str(tmp) not in (str(err.filename), str(err.filename2)):
        return err
    return OSError(err.errno, err.strerror, str(path))  # OSError(errno, ...) picks the subclass of errno


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    The caller writes the temporary file by any means (``torch.save``, ``fig.savefig``, ``np.save``...). The
    parent folder is created when missing. The temporary name stays within the file system's name limit however
    long ``path``'s name is, and an ``OSError`` about the temporary file (writing it, or renaming it to a name
    the file system refuses) is raised naming ``path``.

    Raises:
        IsADirectoryError: ``path`` is an existing folder.
        OSError: writing or renaming failed (``File name too long``, a full disk...), naming ``path``.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from stn.io import atomic_path
        >>> out = Path(tempfile.mkdtemp()) / "out.bin"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_bytes(b"abc")
        >>> out.read_bytes()
        b'abc'
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder, expected a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        renamed = _naming(err, tmp, path)
        if renamed is err:
            raise
        raise renamed from err
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSON-lines file (an empty list when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _columns(records: Sequence[dict[str, Any]]) -> list[str]:
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    return list(columns)


def write_csv(records: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """``records`` as a CSV table (columns: every key, in order of first appearance)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(records), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return write_text_atomic(path, buffer.getvalue())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def format_markdown_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table; floats get 4 significant digits."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown_table(records: Sequence[Mapping[str, Any]], columns: Mapping[str, str]) -> str:
    """A Markdown table of ``records``, one row each; ``columns``: ``{header: format string of a record's fields}``
    (``str.format_map``).

    Example:
        >>> print(markdown_table([{"model": "cnn", "error": 1.2345}], {"model": "{model}", "error (%)": "{error:.2f}"}))
        | model | error (%) |
        |---|---|
        | cnn | 1.23 |
        <BLANKLINE>
    """
    return format_markdown_table([[cell.format_map(r) for cell in columns.values()] for r in records], list(columns))


def write_report(out: str | Path, name: str, text: str, record: Mapping[str, Any] | None = None) -> Path:
    """Write ``<out>/<name>.md`` (``text``) and, when given, ``<out>/results.json`` (``record``) atomically;
    returns the Markdown's path."""
    if record is not None:
        write_text_atomic(Path(out) / "results.json", json.dumps(record, indent=2) + "\n")
    return write_text_atomic(Path(out) / f"{name}.md", text)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM  # exists, owned by another user
    return True


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (``.<name>.<pid>.tmp``) in ``folder`` whose writing process is gone.

    Files of live processes are kept: they may be writing right now. Returns the removed paths.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from stn.io import remove_stale_temp_files
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / ".checkpoint.pt.999999999.tmp").write_bytes(b"half")
        >>> [p.name for p in remove_stale_temp_files(folder)]
        ['.checkpoint.pt.999999999.tmp']
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match and entry.is_file() and not _pid_alive(int(match.group(1))):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


class RunLockedError(RuntimeError):
    """Another live process holds the folder's :class:`RunLock`."""


class RunLock:
    """Exclusive right to write a run folder, held as ``folder/.lock`` containing the holder's pid.

    Creating the lock file is atomic (``O_CREAT | O_EXCL``), so of two processes starting at once exactly one
    wins. A lock whose pid no longer runs (a run killed with ``kill -9``) is stale and taken over. The same
    process may not take the lock twice. Use as a context manager, or call :meth:`acquire` / :meth:`release`.

    Raises:
        RunLockedError: another live process holds the lock; the message names its pid.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from stn.io import RunLock
        >>> folder = Path(tempfile.mkdtemp())
        >>> lock = RunLock(folder).acquire()
        >>> RunLock(folder).acquire()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        stn.io.RunLockedError: ... is in use by this process ...
        >>> lock.release()
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._held = False

    def holder(self) -> int | None:
        """The pid written in the lock file, or ``None`` when there is none (or it is unreadable)."""
        try:
            return int(self.path.read_text(encoding="utf-8").split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # create; else remove a stale lock and retry (another process may race us to it)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = self.holder()
                if pid is not None and _pid_alive(pid):
                    who = "this process" if pid == os.getpid() else f"process {pid}"
                    raise RunLockedError(
                        f"{self.folder} is in use by {who} (lock file {self.path}); wait for it to finish, stop "
                        "it, or choose another output folder"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(f"{os.getpid()}\n")
            self._held = True
            return self
        raise RunLockedError(f"could not take the lock {self.path}: other processes keep taking it")

    def release(self) -> None:
        if self._held:
            if self.holder() == os.getpid():
                self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
