"""Metrics files: JSON lines, CSV, Markdown tables, optional TensorBoard."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from stn.engine.metrics import MetricsLog, format_markdown_table, read_jsonl, write_csv, write_text_atomic


def test_log_appends_records_and_restarts_from_the_given_history(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path)
    log.append({"epoch": 1, "test_error": 0.5})
    log.append({"epoch": 2, "test_error": 0.25})
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"epoch": 1, "test_error": 0.5}, {"epoch": 2, "test_error": 0.25}]
    # a resumed run whose checkpoint holds only epoch 1 rewrites the file, so epoch 2 is not duplicated
    MetricsLog(tmp_path, records=[{"epoch": 1, "test_error": 0.5}]).append({"epoch": 2, "test_error": 0.3})
    assert [r["test_error"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0.5, 0.3]


def test_read_jsonl_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_jsonl(tmp_path / "none.jsonl") == []


def test_csv_has_every_column(tmp_path: Path) -> None:
    write_csv([{"a": 1, "b": 2.5}, {"a": 2, "c": "x"}], tmp_path / "m.csv")
    with (tmp_path / "m.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"a": "1", "b": "2.5", "c": ""}, {"a": "2", "b": "", "c": "x"}]


def test_markdown_table() -> None:
    text = format_markdown_table([["CNN", 0.012345, None], ["ST", 3, "ok"]], ["model", "error", "note"])
    assert text.splitlines() == ["| model | error | note |", "|---|---|---|", "| CNN | 0.01235 |  |", "| ST | 3 | ok |"]


def test_atomic_text_write_replaces_the_file(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "a" / "f.txt", "one")
    write_text_atomic(tmp_path / "a" / "f.txt", "two")
    assert (tmp_path / "a" / "f.txt").read_text() == "two"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["f.txt"]


def test_tensorboard_without_the_package_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="pip install tensorboard"):
        MetricsLog(tmp_path, tensorboard=True)
