"""A folder that holds runs (``runs/demo``) given where one run is expected: the error lists the runs inside."""

from __future__ import annotations

from pathlib import Path

import pytest

from stn.cli import main
from stn.cli._runs import runs_in


def _demo_folder(root: Path) -> Path:
    """``<root>/demo`` as ``stn demo`` leaves it: two runs, one with its checkpoint, one with a summary only."""
    demo = root / "demo"
    (demo / "cnn").mkdir(parents=True)
    (demo / "cnn" / "summary.json").write_text("{}")
    (demo / "st-cnn-aff").mkdir()
    (demo / "st-cnn-aff" / "checkpoint.pt").write_bytes(b"")
    (demo / "figures").mkdir()  # not a run
    return demo


@pytest.mark.parametrize(
    "command", [["eval"], ["visualize", "--out", "fig.png"], ["export", "--format", "torchscript"]]
)
def test_a_folder_of_runs_is_one_line_listing_them(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = _demo_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main([command[0], str(demo), *command[1:]]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{demo} holds no checkpoint.pt but 2 runs: {demo / 'cnn'}, {demo / 'st-cnn-aff'}; give one of them" in err


def test_runs_are_found_two_levels_down_and_an_empty_folder_keeps_the_plain_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nested = tmp_path / "table1" / "rts" / "cnn-seed0"
    nested.mkdir(parents=True)
    (nested / "checkpoint.pt").write_bytes(b"")
    assert runs_in(tmp_path / "table1") == [nested] and runs_in(tmp_path) == []  # three levels down: not listed
    assert runs_in(nested) == [] and runs_in(tmp_path / "missing") == []
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty")]) == 1
    assert "no checkpoint at" in capsys.readouterr().err
