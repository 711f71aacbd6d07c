"""The run folder's rules (stn.engine.rundir): a run writes only into a new or empty folder or its own, recognised
by its record; someone else's folder is refused and left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from stn.engine import ClassificationTask, TrainConfig, Trainer
from stn.engine.checkpoint import RunRecord
from stn.engine.rundir import check_run_folder, is_run_folder, read_run_config, write_run_config
from stn.models import create_model


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def foreign_folder(folder: Path) -> Path:
    """A user's folder holding files named as a run's."""
    (folder / "notes").mkdir(parents=True)
    (folder / "config.json").write_text('{"my": "settings"}\n')
    (folder / "summary.md").write_text("# my summary\n")
    (folder / "metrics.csv").write_text("a,b\n1,2\n")
    (folder / "notes" / "todo.txt").write_text("keep me")
    return folder


def trainer(run_dir: Path, **options) -> Trainer:
    data = TensorDataset(torch.rand(32, 1, 12, 12), torch.randint(0, 3, (32,)))
    model = create_model("fcn", in_shape=(1, 12, 12), num_classes=3, target_params=3_000)
    config = TrainConfig(epochs=1, batch_size=16, device="cpu")
    return Trainer(model, data, data, ClassificationTask(3), config, run_dir=run_dir, progress=False, **options)


def test_a_foreign_folder_is_refused_and_left_byte_identical(tmp_path: Path) -> None:
    folder = foreign_folder(tmp_path / "mine")
    before = snapshot(folder)
    with pytest.raises(FileExistsError, match=r"not an stn run folder .*config\.json, metrics\.csv, notes.*--force"):
        trainer(folder)
    assert snapshot(folder) == before and sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.json", "summary.md", "metrics.csv", "notes"]
    )  # not even a lock file


def test_force_trains_in_a_foreign_folder(tmp_path: Path) -> None:
    folder = foreign_folder(tmp_path / "mine")
    assert trainer(folder, force=True).fit().finished
    assert (folder / "notes" / "todo.txt").read_text() == "keep me" and is_run_folder(folder)


def test_new_empty_and_own_folders_are_accepted(tmp_path: Path) -> None:
    check_run_folder(tmp_path / "new")
    check_run_folder(tmp_path)  # empty
    (tmp_path / ".lock").write_text("999999999\n")  # what a run killed at its start leaves
    (tmp_path / ".config.json.999999999.tmp").write_text("{")
    check_run_folder(tmp_path)
    run = tmp_path / "run"
    trainer(run).fit()
    (run / "checkpoint.pt").unlink()
    assert is_run_folder(run)  # its config.json is stn's record, so the folder stays a run's
    check_run_folder(run)


def test_a_file_is_not_a_run_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        check_run_folder(tmp_path / "file")


def test_config_json_is_the_run_record(tmp_path: Path) -> None:
    record = RunRecord("cnn", {"in_shape": [1, 28, 28]}, {"name": "classification", "num_classes": 10}, {"kind": "x"},
                       TrainConfig(lr=0.02).to_dict())  # fmt: skip
    write_run_config(tmp_path, record)
    assert json.loads((tmp_path / "config.json").read_text())["model"] == {"name": "cnn", "kwargs": record.model_kwargs}
    assert read_run_config(tmp_path) == record and read_run_config(tmp_path).train_config().lr == 0.02
    (tmp_path / "config.json").write_text('{"my": "settings"}')
    with pytest.raises(ValueError, match=r"config\.json is damaged"):
        read_run_config(tmp_path)
