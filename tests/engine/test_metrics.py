"""The per-run metrics log: JSON lines, optional TensorBoard."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stn.engine.metrics import MetricsLog
from stn.io import read_jsonl


def test_log_appends_records_and_restarts_from_the_given_history(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path)
    log.append({"epoch": 1, "test_error": 0.5})
    log.append({"epoch": 2, "test_error": 0.25})
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"epoch": 1, "test_error": 0.5}, {"epoch": 2, "test_error": 0.25}]
    # a resumed run whose checkpoint holds only epoch 1 rewrites the file, so epoch 2 is not duplicated
    MetricsLog(tmp_path, records=[{"epoch": 1, "test_error": 0.5}]).append({"epoch": 2, "test_error": 0.3})
    assert [r["test_error"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0.5, 0.3]


def test_tensorboard_without_the_package_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="pip install tensorboard"):
        MetricsLog(tmp_path, tensorboard=True)
