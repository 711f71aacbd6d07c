"""Pretrained weights shipped with stn (stn.models.pretrained, create_model(..., pretrained=...))."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from stn.models import create_model, list_pretrained
from stn.models import pretrained as pt
from stn.models.pretrained import ChecksumError, load_pretrained_state, pretrained_entry, publish, read_manifest

NAME = "st-cnn-aff.rts"  # the entry the tests score; the lead re-publishes it, never removes it


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_shipped_entry_loads_its_checked_fp32_weights_into_its_model() -> None:
    entries = read_manifest()
    assert NAME in entries and list_pretrained() == sorted(entries)
    for name, entry in entries.items():
        path = pt.WEIGHTS_DIR / entry["file"]
        assert (
            hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"] and path.stat().st_size == entry["bytes"]
        )
        state = load_pretrained_state(entry)
        assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point()), name
        model = create_model(name, pretrained=True)
        assert sum(p.numel() for p in model.parameters()) == entry["params"]
        assert entry["test_samples"] == 10_000 and entry["subset"]["num_test"] == pt.SUBSET_SIZE
        assert entry["training"]["command"] and entry["data"]["root"] is None


def test_the_spellings_load_the_same_weights_and_a_tagged_name_alone_builds_the_architecture() -> None:
    model = create_model("st-cnn-aff", pretrained="rts")
    assert _same_weights(model, create_model("st-cnn-aff.rts", pretrained=True))
    assert _same_weights(model, create_model("ST-CNN-AFF:rts", pretrained=True, in_shape=(1, 42, 42)))
    assert list_pretrained("st-cnn-aff.*") == ["st-cnn-aff.p", "st-cnn-aff.r", NAME]
    with pytest.raises(KeyError, match="st-cnn-aff' has pretrained weights for p, r, rts: name one"):
        create_model("st-cnn-aff", pretrained=True)  # several datasets: pretrained=True needs the tag
    fresh = create_model(NAME, seed=0)  # timm: the name picks the configuration, pretrained the weights
    assert not _same_weights(model, fresh)
    assert (
        fresh.stn_spec
        == model.stn_spec
        == {"name": "st-cnn-aff", "kwargs": pretrained_entry("st-cnn-aff", "rts")["model_kwargs"]}
    )


def test_unknown_names_and_models_without_weights_list_what_exists() -> None:
    with pytest.raises(
        KeyError, match=r"no pretrained weights 'st-cnn-aff\.nope'; pretrained weights exist for .*st-cnn-aff\.rts"
    ):
        create_model("st-cnn-aff", pretrained="nope")
    with pytest.raises(KeyError, match=r"model 'st-cnn-proj' has no pretrained weights; .*st-cnn-aff\.rts"):
        create_model("st-cnn-proj.rts", pretrained=True)
    with pytest.raises(KeyError, match=r"unknown model 'nope'; known models: .*st-cnn-aff"):
        create_model("nope.rts")
    with pytest.raises(KeyError, match="pretrained is now pretrained_backbone"):  # the CUB models' old keyword
        create_model("cub-cnn", pretrained=True)
    with pytest.raises(ValueError, match=r"expected <model>\.<tag>"):
        create_model("st-cnn-aff:")


def test_arguments_that_contradict_the_weights_are_refused() -> None:
    with pytest.raises(ValueError, match=r"trained with .*do not fit \{'in_shape': \(1, 28, 28\)\}"):
        create_model("st-cnn-aff", pretrained="rts", in_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="give one tag"):
        create_model("st-cnn-aff.rts", pretrained="r")


def _copy_of_the_weights(tmp_path: Path) -> tuple[Path, dict]:
    folder = tmp_path / "weights"
    shutil.copytree(pt.WEIGHTS_DIR, folder)
    return folder, read_manifest(folder)[NAME]


def test_a_corrupted_copy_fails_the_checksum_naming_the_file_and_both_hashes(tmp_path: Path, monkeypatch) -> None:
    folder, entry = _copy_of_the_weights(tmp_path)
    path = folder / entry["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as err:
        load_pretrained_state(entry, folder)
    message = str(err.value)
    assert str(path) in message and entry["sha256"] in message and hashlib.sha256(data).hexdigest() in message
    monkeypatch.setattr(pt, "WEIGHTS_DIR", folder)
    with pytest.raises(ChecksumError, match="damaged"):
        create_model(NAME, pretrained=True)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        create_model(NAME, pretrained=True)


def test_the_loaded_model_scores_the_stored_error_on_the_fixed_subset(
    shared_data: Path, assert_recorded_subset
) -> None:
    from stn.cli.eval import load_test_set, score

    entry = pretrained_entry("st-cnn-aff", "rts")
    where = argparse.Namespace(data=None, data_dir=str(shared_data / "mnist"))
    test = load_test_set(entry, where, entry["subset"]["num_test"])
    metrics = score(create_model(NAME, pretrained=True).eval(), entry, test)
    assert len(test) == pt.SUBSET_SIZE
    assert_recorded_subset(metrics, entry)  # bit for bit on the CPU that recorded it


def _record(tag: str = "rts", **changes) -> dict:
    entry = pretrained_entry("st-cnn-aff", "rts")
    keep = ("model_name", "model_kwargs", "input_shape", "task", "data", "config", "test_error", "subset")
    return {**{k: entry[k] for k in keep}, "tag": tag, **changes}


def test_publish_writes_fp32_weights_and_replaces_an_entry_cleanly(tmp_path: Path) -> None:
    model = create_model("st-cnn-aff", in_shape=(1, 42, 42), seed=1).double()  # stored as fp32 all the same
    first = publish(model.state_dict(), _record(test_error=0.5), tmp_path)
    assert first["file"] == f"st-cnn-aff.rts-{first['sha256'][:8]}.pth"
    state = load_pretrained_state(read_manifest(tmp_path)["st-cnn-aff.rts"], tmp_path)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    assert torch.equal(state["classifier.0.weight"], model.state_dict()["classifier.0.weight"].float())
    publish(model.state_dict(), _record(tag="r"), tmp_path)
    second = publish(create_model("st-cnn-aff", seed=2).state_dict(), _record(test_error=0.25), tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert list(manifest["weights"]) == ["st-cnn-aff.r", "st-cnn-aff.rts"]
    assert manifest["weights"]["st-cnn-aff.rts"]["test_error"] == 0.25
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["manifest.json", second["file"], read_manifest(tmp_path)["st-cnn-aff.r"]["file"]]
    )  # the replaced file is gone, no temporary file is left
    assert list_pretrained(directory=tmp_path) == ["st-cnn-aff.r", "st-cnn-aff.rts"]


def test_publish_refuses_a_bad_tag_or_an_incomplete_record(tmp_path: Path) -> None:
    state = create_model("cnn", in_shape=(1, 42, 42)).state_dict()
    with pytest.raises(ValueError, match="lower-case word"):
        publish(state, _record(tag="RTS v2"), tmp_path)
    record = _record()
    del record["subset"]
    with pytest.raises(ValueError, match="lacks subset"):
        publish(state, record, tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_damaged_manifest_is_named(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest.json is damaged"):
        list_pretrained(directory=tmp_path)
    (tmp_path / "manifest.json").write_text('{"weights": {}}')
    with pytest.raises(ValueError, match="not an stn pretrained-weights manifest"):
        list_pretrained(directory=tmp_path)
