"""stn.io: atomic writes, stale temporary files, the run-folder lock, JSON lines, CSV and Markdown tables."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stn.io import (
    RunLock,
    RunLockedError,
    atomic_path,
    format_markdown_table,
    read_jsonl,
    remove_stale_temp_files,
    write_csv,
    write_text_atomic,
)


def test_atomic_write_replaces_and_cleans_up_on_error(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "sub" / "a.txt", "one")
    assert path.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert path.read_text() == "one"  # the old file survives
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]  # no temporary file left


def test_atomic_path_refuses_a_folder(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="it is a folder"), atomic_path(tmp_path):
        pass


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".checkpoint.pt.{dead_pid}.tmp"
    live = tmp_path / f".checkpoint.pt.{os.getpid()}.tmp"
    other = tmp_path / "checkpoint.pt"
    for p in (stale, live, other):
        p.write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert live.exists() and other.exists() and not stale.exists()


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    with RunLock(tmp_path) as lock:
        assert lock.holder() == os.getpid()
        with pytest.raises(RunLockedError, match="in use by this process"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / ".lock").exists()
    RunLock(tmp_path).acquire().release()


def test_lock_held_by_another_live_process_names_its_pid(tmp_path: Path) -> None:
    code = (
        "import sys, time; from stn.io import RunLock; RunLock(sys.argv[1]).acquire(); "
        "print('ok', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ok"
        with pytest.raises(RunLockedError, match=f"process {proc.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        proc.kill()
        proc.wait()
    # the holder died without releasing (kill -9): its lock is stale and taken over
    with RunLock(tmp_path) as lock:
        assert lock.holder() == os.getpid()


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


def test_a_250_byte_output_name_is_written_with_a_temporary_name_within_the_limit(tmp_path: Path) -> None:
    name = "é" * 123 + ".txt"  # 250 bytes in UTF-8: '.<name>.<pid>.tmp' would pass the 255-byte limit
    assert len(os.fsencode(name)) == 250
    seen = []
    with atomic_path(tmp_path / name) as tmp:
        seen.append(tmp)
        tmp.write_text("kept")
    assert len(os.fsencode(seen[0].name)) <= 255 and seen[0].parent == tmp_path
    assert (tmp_path / name).read_text() == "kept" and [p.name for p in tmp_path.iterdir()] == [name]
    assert write_text_atomic(tmp_path / name, "again").read_text() == "again"


def test_the_short_temporary_name_of_a_long_name_is_removed_when_its_process_is_gone(tmp_path: Path) -> None:
    with atomic_path(tmp_path / ("a" * 250)) as tmp:
        stale = tmp.with_name(tmp.name.replace(f".{os.getpid()}.", ".999999999."))
        tmp.write_bytes(b"whole")
    stale.write_bytes(b"half")  # as a process killed while writing that name would leave it
    assert remove_stale_temp_files(tmp_path) == [stale]


def test_a_name_above_the_limit_is_an_error_naming_the_users_file_not_the_temporary_one(tmp_path: Path) -> None:
    path = tmp_path / ("b" * 300 + ".png")
    with pytest.raises(OSError, match="File name too long") as caught:
        write_text_atomic(path, "x")
    assert caught.value.filename == str(path) and ".tmp" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
