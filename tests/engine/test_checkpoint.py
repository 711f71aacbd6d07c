"""Checkpoint files: atomic writes, clear errors for corrupt, foreign or incompatible files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stn.engine.checkpoint import CheckpointError, build_model, load_checkpoint, load_model, save_checkpoint
from stn.models import create_model

KWARGS = {"in_shape": (1, 28, 28), "num_classes": 10, "target_params": 30_000}


def model_state(name: str = "st-cnn-aff", **kwargs) -> dict:
    model = create_model(name, **{**KWARGS, **kwargs})
    return {
        "config": {"data": "r"},
        "model_name": name,
        "model_kwargs": {**KWARGS, **kwargs},
        "model": model.state_dict(),
        "step": 3,
    }


def test_round_trip_rebuilds_the_same_model(tmp_path: Path) -> None:
    state = model_state()
    save_checkpoint(state, tmp_path / "sub" / "ckpt.pt")
    model, loaded = load_model(tmp_path / "sub" / "ckpt.pt")
    assert loaded["step"] == 3 and loaded["format"] == "stn-checkpoint"
    assert not model.training
    for key, value in state["model"].items():
        assert torch.equal(model.state_dict()[key], value)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["ckpt.pt"]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(model_state(), path)
    before = path.read_bytes()

    def broken_save(obj: object, f: Path) -> None:
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model_state(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(model_state(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    path.write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"weights": torch.zeros(2)}, "not an stn training checkpoint"),
        ({"format": "stn-checkpoint", "version": 99}, "version 99"),
        ({"format": "stn-checkpoint", "version": 1, "model": {}}, "version 1; this stn reads version 2"),
        ({"format": "stn-checkpoint", "version": 2, "model": {}}, "lacks model_name, model_kwargs, step"),
    ],
)
def test_foreign_or_incompatible_files(tmp_path: Path, content: dict, match: str) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_weights_of_another_architecture(tmp_path: Path) -> None:
    state = model_state()
    state["model_name"] = "st-cnn-tps"  # θ has 32 numbers there, 6 here
    with pytest.raises(CheckpointError, match=r"cannot rebuild model 'st-cnn-tps'.*size mismatch"):
        build_model(state)


def test_a_run_folder_stands_for_its_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(model_state(), tmp_path / "checkpoint.pt")
    assert load_checkpoint(tmp_path)["step"] == 3
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty" / "checkpoint.pt")):
        (tmp_path / "empty").mkdir()
        load_checkpoint(tmp_path / "empty")


def test_create_model_records_every_factory_argument() -> None:
    from stn.models.registry import model_spec

    spec = model_spec(create_model("st-cnn-tps", in_shape=(1, 28, 28), target_params=30_000))
    assert spec["name"] == "st-cnn-tps"
    assert spec["kwargs"]["target_params"] == 30_000 and spec["kwargs"]["in_shape"] == (1, 28, 28)
    assert spec["kwargs"]["num_classes"] == 10  # a default, recorded too: the checkpoint guesses nothing
    rebuilt = create_model(spec["name"], **spec["kwargs"])
    assert sum(p.numel() for p in rebuilt.parameters()) > 0 and model_spec(rebuilt) == spec


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4352 vs 4240"),
        OSError(28, "No space left on device"),
    ],
)
def test_a_full_disk_is_said_naming_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(model_state(), path)
    before = path.read_bytes()

    def full_disk(obj: object, f: Path) -> None:
        Path(f).write_bytes(b"half")
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="the disk is full") as caught:
        save_checkpoint(model_state(), path)
    assert caught.value.filename == str(path) and caught.value.errno == 28
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
