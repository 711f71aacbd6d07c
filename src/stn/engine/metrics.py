"""Run records: one JSON object per epoch appended to ``metrics.jsonl``, summaries as CSV and Markdown, and
optional TensorBoard scalars.

Example:
    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> log = MetricsLog(run)
    >>> log.append({"epoch": 1, "test_error": 0.012})
    >>> read_jsonl(Path(run) / METRICS_FILE)[-1]["test_error"]
    0.012
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from stn.io import write_text_atomic

__all__ = ["METRICS_FILE", "MetricsLog", "format_markdown_table", "read_jsonl", "write_csv"]

METRICS_FILE = "metrics.jsonl"


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


class MetricsLog:
    """The per-run metrics file ``<run_dir>/metrics.jsonl`` (plus TensorBoard scalars with ``tensorboard=True``).

    Args:
        run_dir: the run's folder.
        records: records already logged (a resumed run rewrites the file from its checkpoint's history, so that
            epochs logged after the last checkpoint are not duplicated).
        tensorboard: also write TensorBoard event files to ``run_dir/tensorboard``.

    Raises:
        ImportError: ``tensorboard=True`` without the ``tensorboard`` package.
    """

    def __init__(self, run_dir: str | os.PathLike, records: Iterable[dict[str, Any]] = (), tensorboard: bool = False):
        self.path = Path(run_dir) / METRICS_FILE
        self.records = list(records)
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError("TensorBoard logging needs the tensorboard package: pip install tensorboard") from err
            self._writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def append(self, record: dict[str, Any], step: int | None = None) -> None:
        """Append one record (flushed at once); numbers also go to TensorBoard at ``step``."""
        self.records.append(record)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(key.replace(".", "/"), value, step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
