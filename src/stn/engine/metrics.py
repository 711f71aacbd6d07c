"""Run records: one JSON object per epoch appended to ``metrics.jsonl`` (read back with :func:`stn.io.read_jsonl`),
optional TensorBoard scalars, the line that shows an epoch (:func:`epoch_line`) and the progress bar of the steps
(:class:`StepBar`).

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

from torch import Tensor
from tqdm.auto import tqdm

from stn.io import write_text_atomic

__all__ = ["METRICS_FILE", "POSTFIX_EVERY", "MetricsLog", "StepBar", "epoch_line"]

METRICS_FILE = "metrics.jsonl"
POSTFIX_EVERY = 10  # steps between progress-bar updates (each reads values back from the device)


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


def epoch_line(record: dict[str, Any], metrics: Iterable[str], num_epochs: int) -> str:
    """One epoch's ``record`` as the line training prints: lr, the train / test (/ validation) ``metrics`` (losses
    as numbers, the others in %), throughput and the transformers' mean scale and share of points outside.

    Example:
        >>> epoch_line({"epoch": 2, "lr": 0.01, "train_loss": 0.5, "test_loss": 0.4, "images_per_s": 900}, ["loss"], 5)
        'epoch 2/5  lr 0.01  train loss 0.5000  test loss 0.4000  900 img/s'
    """
    parts = [f"epoch {record['epoch']}/{num_epochs}", f"lr {record['lr']:.2g}"]
    for split in ("train", "test", "val"):
        for m in metrics:
            value = record.get(f"{split}_{m}")
            if value is not None:
                parts.append(f"{split} {m} {value:.4f}" if m == "loss" else f"{split} {m} {100 * value:.2f}%")
    parts.append(f"{record['images_per_s']:.0f} img/s")
    for key, value in record.items():
        if key.endswith(".scale_mean"):
            parts.append(f"{key} {value:.2f}")
        elif key.endswith((".outside_frac", ".nonfinite_frac")) and (value or key.endswith("outside_frac")):
            parts.append(f"{key} {100 * value:.1f}%")
    return "  ".join(parts)


class StepBar:
    """A tqdm bar over a run's ``total`` steps (from ``initial``), showing every :data:`POSTFIX_EVERY` steps the
    epoch, the epoch's running loss and images per second; does nothing unless ``enabled``."""

    def __init__(self, total: int, initial: int, title: str, *, enabled: bool) -> None:
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, desc=title, disable=not enabled)

    def update(self, step: int, epoch: str, sums: Tensor, seconds: float, processes: int = 1) -> None:
        """One step done (now ``step``, in ``epoch``, e.g. ``"2/10"``); ``sums``: this process's metric sums and
        sample count of the epoch so far, ``seconds``: the epoch's training time, over ``processes`` processes."""
        self.bar.update(1)
        if step % POSTFIX_EVERY == 0 and not self.bar.disable:
            *totals, seen = sums.tolist()
            loss = f"{totals[0] / max(seen, 1):.3f}"
            self.bar.set_postfix(epoch=epoch, loss=loss, img_s=f"{seen * processes / seconds:.0f}")

    def close(self) -> None:
        self.bar.close()
