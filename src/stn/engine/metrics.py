"""Run records: one JSON object per epoch appended to ``metrics.jsonl`` (read back with :func:`stn.io.read_jsonl`),
and optional TensorBoard scalars.

Example:
    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> from stn.io import read_jsonl
    >>> log = MetricsLog(run)
    >>> log.append({"epoch": 1, "test_error": 0.012})
    >>> read_jsonl(Path(run) / METRICS_FILE)[-1]["test_error"]
    0.012
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stn.io import write_text_atomic

__all__ = ["METRICS_FILE", "MetricsLog"]

METRICS_FILE = "metrics.jsonl"


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
