"""Tests for stn.experiments.table3 (CUB, Table 3) on the real 180-image CUB subset: an end-to-end smoke run of
the four rows through the training engine, resume equivalence, ``stn eval`` on a run's checkpoint, the attention
statistics and the figure."""

import argparse
import json
import os
import signal
import sys

import pytest
import torch
from PIL import Image

from stn.cli import main
from stn.data.cub import CUB200
from stn.data.specs import build, cub_spec
from stn.engine.checkpoint import load_checkpoint
from stn.engine.trainer import Trainer
from stn.experiments import table3
from stn.io import read_jsonl


def parse(*argv):
    parser = argparse.ArgumentParser()
    table3.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def cub_root(shared_data):
    root = shared_data / "cub_200_2011_subset"
    if not (root / "images.txt").is_file():
        pytest.skip(f"the CUB-200-2011 subset is not in {root}")
    return root


def tiny_args(cub_root, out, *extra):
    """A CPU-sized run (runs in ``<out>/runs``): tiny random backbone, 32 px inputs, 16 training photos in batches of
    8 (2 steps an epoch)."""
    return ["--cub-root", str(cub_root), "--out", str(out), "--runs-dir", str(out / "runs"), "--backbone", "tiny",
            "--no-pretrained",
            "--input-size", "32", "--epochs", "2", "--batch-size", "8", "--limit-train", "16", "--limit-test", "10",
            "--workers", "0", "--device", "cpu", "--figure-images", "3", "--loc-lr-scale", "1", "--quiet",
            *extra]  # fmt: skip


def test_defaults_follow_the_paper():
    args = parse("--cub-root", "x")
    assert (args.input_size, args.backbone, args.pretrained, args.budget) == (448, "inception_v3", True, "quick")
    assert args.runs == ["cnn-224", "2x-224", "2x-448", "4x-448"]
    assert [r.paper_accuracy for r in table3.RUNS.values()] == [82.3, 83.1, 83.9, 84.1]
    quick = table3.BUDGETS["quick"].config()
    assert (quick.epochs, quick.batch_size, quick.lr, quick.weight_decay) == (5, 32, 0.01, 1e-4)
    assert quick.localization_lr_scale < quick.lr and quick.lr_milestones == (2 / 3,)
    assert table3.BUDGETS["paper"].epochs == 50


def test_smoke_run_on_real_cub_images(cub_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = tiny_args(cub_root, out, "--epochs", "1")
    assert table3.run(parse(*argv)) == 0
    results = {key: json.loads((out / key / "result.json").read_text()) for key in table3.RUNS}
    assert results["cnn-224"]["image_size"] == 16 and results["2x-448"]["image_size"] == 32
    assert results["2x-448"]["crop_size"] == results["2x-224"]["crop_size"] == 16
    for key, result in results.items():
        assert result["test_images"] == 10 and result["classes"] == 10 and 0 <= result["accuracy"] <= 100
        assert ("centre_in_box" in result) == (key != "cnn-224")
        summary = json.loads((out / "runs" / key / "summary.json").read_text())
        assert result["accuracy"] == pytest.approx(100 * (1 - summary["test_error"]))
        assert summary["steps"] == 2 and len(read_jsonl(out / "runs" / key / "metrics.jsonl")) == 1
    assert len(results["4x-448"]["centre_in_box_per_transformer"]) == 4
    assert "transformer.scale_mean" in read_jsonl(out / "runs" / "4x-448" / "metrics.jsonl")[0]  # θ diagnostics
    for key in ("2x-224", "2x-448", "4x-448"):
        with Image.open(out / key / "attention.png") as figure:
            assert figure.format == "PNG" and figure.width > 300
    assert not (out / "cnn-224" / "attention.png").exists()
    table = (out / "table3.md").read_text()
    for number in ("82.3", "83.1", "83.9", "84.1"):
        assert f"| {number} |" in table
    assert f"| {results['4x-448']['accuracy']:.1f} |" in table and "(4x-448/attention.png)" in table

    def fail(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(table3, "make_trainer", fail)
    assert table3.run(parse(*argv)) == 0
    (out / "2x-224" / "result.json").unlink()  # a finished run without its result: its checkpoint is scored
    assert table3.run(parse(*argv)) == 0
    again = json.loads((out / "2x-224" / "result.json").read_text())
    assert again.keys() == results["2x-224"].keys() and again["accuracy"] == results["2x-224"]["accuracy"]
    assert again["window_on_box"] == pytest.approx(results["2x-224"]["window_on_box"], abs=1e-5)
    (out / "2x-224" / "result.json").unlink()
    (out / "runs" / "2x-224" / "checkpoint.pt").unlink()  # as results folders in git keep them: said, not retrained
    with pytest.raises(FileNotFoundError, match=r"2x-224.*keeps no checkpoint\.pt.*delete the folder"):
        table3.run(parse(*argv))


def test_interrupted_run_resumes_to_the_same_weights_and_eval_reproduces_it(cub_root, tmp_path, monkeypatch, capsys):
    """4 steps straight == 3 steps, SIGTERM, resume, 1 step (across the epoch boundary); then ``stn eval``."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert table3.run(parse(*tiny_args(cub_root, straight, "--runs", "2x-224"))) == 0
    original = Trainer.train_step

    def step_then_signal(self, x, y):
        out = original(self, x, y)
        if self.step == 2:  # the 3rd step, the first of the second epoch
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    assert table3.run(parse(*tiny_args(cub_root, resumed, "--runs", "2x-224"))) == 128 + signal.SIGTERM
    assert load_checkpoint(resumed / "runs" / "2x-224")["step"] == 3 and not (resumed / "2x-224").exists()
    monkeypatch.undo()
    assert table3.run(parse(*tiny_args(cub_root, resumed, "--runs", "2x-224"))) == 0

    a, b = load_checkpoint(straight / "runs" / "2x-224"), load_checkpoint(resumed / "runs" / "2x-224")
    assert a["step"] == b["step"] == 4 and a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    keys = ("epoch", "step", "lr", "train_loss", "train_error", "test_loss", "test_error", "transformer.shift_mean")
    assert [[r[k] for k in keys] for r in read_jsonl(straight / "runs" / "2x-224" / "metrics.jsonl")] == [
        [r[k] for k in keys] for r in read_jsonl(resumed / "runs" / "2x-224" / "metrics.jsonl")
    ]
    first, second = (json.loads((d / "2x-224" / "result.json").read_text()) for d in (straight, resumed))
    assert first["accuracy"] == second["accuracy"] and first["centre_in_box"] == second["centre_in_box"]

    capsys.readouterr()
    assert main(["eval", str(resumed / "runs" / "2x-224"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    summary = json.loads((resumed / "runs" / "2x-224" / "summary.json").read_text())
    assert scored["model"] == "cub-st-cnn-2x" and scored["test_samples"] == 10
    assert scored["test_error"] == summary["test_error"]
    assert scored["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-5)


def test_a_changed_recipe_is_refused_not_mixed_into_a_finished_run(cub_root, tmp_path):
    out = tmp_path / "out"
    assert table3.run(parse(*tiny_args(cub_root, out, "--runs", "cnn-224", "--epochs", "1"))) == 0
    with pytest.raises(ValueError, match="localization_lr_scale"):
        table3.run(parse(*tiny_args(cub_root, out, "--runs", "cnn-224", "--epochs", "1", "--loc-lr-scale", "0.5")))


def test_flips_are_drawn_per_epoch_and_photo(cub_root):
    spec = cub_spec(cub_root, image_size=16, limit_train=12, seed=3)
    train, test = build(spec, "train"), build(spec, "test")
    assert isinstance(test, CUB200) and len(test) == 60
    photos = torch.stack([train.base[i][0] for i in range(12)])

    def flipped(epoch):
        train.set_epoch(epoch)
        items = torch.stack([train[i][0] for i in range(12)])
        assert all(torch.equal(a, b) or torch.equal(a, p.flip(-1)) for a, b, p in zip(items, photos, photos))
        return [not torch.equal(a, p) for a, p in zip(items, photos)]

    first = flipped(0)
    assert 0 < sum(first) < 12 and flipped(1) != first and flipped(0) == first


def test_default_backbone_without_timm_says_what_to_install(cub_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    args = parse("--cub-root", str(cub_root), "--out", str(tmp_path), "--runs", "cnn-224", "--workers", "0")
    with pytest.raises(KeyError, match=r"stn\[cub\]"):
        table3.run(args)


def test_the_spec_keeps_the_photos_folder_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # stn eval may run from another folder than the training
    assert cub_spec("cub", image_size=8)["root"] == str(tmp_path.resolve() / "cub")
