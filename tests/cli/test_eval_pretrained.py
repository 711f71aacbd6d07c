"""``stn eval --pretrained`` on the weights shipped with stn, and scripts/publish_pretrained.py that makes them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from stn.cli import main
from stn.engine.checkpoint import load_checkpoint, save_checkpoint
from stn.models import create_model, list_pretrained
from stn.models import pretrained as pt
from stn.models.pretrained import pretrained_entry, read_manifest

ROOT = Path(__file__).resolve().parents[2]


def _publisher():
    spec = importlib.util.spec_from_file_location("publish_pretrained", ROOT / "scripts" / "publish_pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", list_pretrained())
def test_eval_pretrained_on_the_fixed_subset_gives_the_stored_numbers(
    name: str, shared_data: Path, capsys, assert_recorded_subset
) -> None:
    model, tag = name.rsplit(".", 1)
    entry = pretrained_entry(model, tag)
    mnist = str(shared_data / "mnist")
    assert main(["eval", "--pretrained", f"{model}:{tag}", "--num-test", "500", "--data-dir", mnist, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pretrained"] == name and result["test_samples"] == 500 and result["data"] == tag
    assert_recorded_subset({"loss": result["test_loss"], "error": result["test_error"]}, entry)


@pytest.mark.slow
def test_eval_pretrained_prints_the_published_error_of_the_official_test_split(shared_data: Path, capsys) -> None:
    entry = pretrained_entry("st-cnn-aff", "rts")
    assert (
        main(["eval", "--pretrained", "st-cnn-aff:rts", "--data", "rts", "--data-dir", str(shared_data / "mnist")]) == 0
    )
    out = capsys.readouterr().out
    error = f"error {100 * entry['test_error']:.2f}%"
    assert out.startswith("st-cnn-aff.rts on rts (10000 test samples): ") and out.count(error) == 2, out


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("st-cnn-aff:nope", "no pretrained weights 'st-cnn-aff.nope'; pretrained weights exist for"),
        ("st-cnn-proj:rts", "model 'st-cnn-proj' has no pretrained weights; pretrained weights exist for"),
        ("st-cnn-aff:", "expected <model>.<tag>"),
    ],
)
def test_bad_spellings_are_one_line_listing_what_exists(spelling: str, expected: str, capsys) -> None:
    assert main(["eval", "--pretrained", spelling]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err
    if "exist for" in expected:
        assert "st-cnn-aff.rts" in err


def test_a_checkpoint_and_pretrained_weights_together_are_refused(capsys) -> None:
    for argv, expected in (
        (["eval", "run", "--pretrained", "st-cnn-aff:rts"], "not allowed with"),
        (["eval"], "checkpoint --pretrained is required"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and expected in capsys.readouterr().err


@pytest.fixture(scope="module")
def full_split_run(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished ``stn train`` run of a small CNN on R, scored on the whole (tiny) test split as the real runs."""
    out = tmp_path_factory.mktemp("publish") / "run"
    argv = ["train", "--data", "r", "--model", "cnn", "--iterations", "3", "--batch-size", "16", "--num-train", "48"]
    argv += ["--target-params", "20000", "--data-dir", str(tiny_mnist), "--device", "cpu", "--out", str(out)]
    assert main([*argv, "--quiet", "--no-figures"]) == 0
    return out


def test_publish_a_run_then_eval_it_by_name_then_replace_it(
    full_split_run: Path, tiny_mnist: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    publisher = _publisher()
    weights = tmp_path / "weights"
    argv = [str(full_split_run), "--command", "stn train ...", "--data-dir", str(tiny_mnist)]
    assert publisher.main([*argv, "--weights-dir", str(weights)]) == 0
    assert "published cnn.r:" in capsys.readouterr().out
    entry = read_manifest(weights)["cnn.r"]
    summary = json.loads((full_split_run / "summary.json").read_text())
    assert (entry["test_error"], entry["test_loss"]) == (summary["test_error"], summary["test_loss"])
    assert (
        entry["test_samples"] == 32
        and entry["training"]["command"] == "stn train ..."
        and entry["data"]["root"] is None
    )

    monkeypatch.setattr(pt, "WEIGHTS_DIR", weights)
    assert main(["eval", "--pretrained", "cnn.r", "--data-dir", str(tiny_mnist), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["test_error"], result["test_loss"]) == (entry["test_error"], entry["test_loss"])
    assert result["published_error"] == entry["test_error"]
    trained = load_checkpoint(full_split_run)["model"]
    shipped = create_model("cnn", pretrained="r").state_dict()
    assert all(torch.equal(shipped[k], trained[k]) for k in trained)

    # The same run published again under the same name replaces the entry and its file; nothing else is left.
    assert publisher.publish_run(full_split_run, command="again", data_dir=str(tiny_mnist), weights_dir=weights)
    assert read_manifest(weights)["cnn.r"]["training"]["command"] == "again"
    assert sorted(p.name for p in weights.iterdir()) == sorted(["manifest.json", entry["file"]])


def test_publish_refuses_a_run_whose_error_it_cannot_reproduce(
    full_split_run: Path, tiny_mnist: Path, tmp_path: Path, capsys
) -> None:
    publisher = _publisher()
    checkpoint = load_checkpoint(full_split_run)
    checkpoint["history"][-1]["test_error"] += 0.5
    save_checkpoint(checkpoint, tmp_path / "run" / "checkpoint.pt")
    argv = [
        str(tmp_path / "run"),
        "--command",
        "c",
        "--data-dir",
        str(tiny_mnist),
        "--weights-dir",
        str(tmp_path / "w"),
    ]
    assert publisher.main(argv) == 1
    err = capsys.readouterr().err
    assert "recorded test error" in err and "--allow-difference" in err and not (tmp_path / "w").exists()
    assert publisher.main([*argv, "--allow-difference"]) == 0
    checkpoint["finished"] = False
    save_checkpoint(checkpoint, tmp_path / "run" / "checkpoint.pt")
    assert publisher.main(argv) == 1
    assert "has not finished" in capsys.readouterr().err


def test_rescore_records_this_machines_fingerprint_and_refuses_a_changed_error(
    full_split_run: Path, tiny_mnist: Path, tmp_path: Path
) -> None:
    from stn.numerics import numerics_fingerprint

    publisher = _publisher()
    weights = tmp_path / "weights"
    published = publisher.publish_run(full_split_run, command="c", data_dir=str(tiny_mnist), weights_dir=weights)
    (entry,) = publisher.rescore(["cnn.r"], data_dir=str(tiny_mnist), weights_dir=weights)
    assert entry["evaluated_with"] == numerics_fingerprint()
    assert (entry["test_error"], entry["file"]) == (published["test_error"], published["file"])  # same weights
    manifest = json.loads((weights / "manifest.json").read_text())
    manifest["weights"]["cnn.r"]["test_error"] += 0.5
    (weights / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="--allow-difference"):
        publisher.rescore(["cnn.r"], data_dir=str(tiny_mnist), weights_dir=weights)
    with pytest.raises(ValueError, match="no entries nope"):
        publisher.rescore(["nope"], data_dir=str(tiny_mnist), weights_dir=weights)
