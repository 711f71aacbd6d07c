"""Tests for stn.experiments.table3 (CUB, Table 3): a real end-to-end smoke run on the CUB subset, the
attention statistics and the figure."""

import argparse
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from stn.experiments import table3


def parse(*argv):
    parser = argparse.ArgumentParser()
    table3.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_follow_the_paper():
    args = parse("--cub-root", "x")
    assert (args.input_size, args.backbone, args.pretrained, args.budget) == (448, "inception_v3", True, "quick")
    assert args.runs == ["cnn-224", "2x-224", "2x-448", "4x-448"]
    assert [r.paper_accuracy for r in table3.RUNS.values()] == [82.3, 83.1, 83.9, 84.1]
    assert table3.BUDGETS["quick"].localization_lr_scale < table3.BUDGETS["quick"].lr


def test_smoke_run_on_real_cub_images(shared_data, tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = ["--cub-root", str(shared_data / "cub_200_2011_subset"), "--out", str(out), "--backbone", "tiny",
            "--no-pretrained", "--input-size", "32", "--epochs", "1", "--batch-size", "8", "--limit-train", "16",
            "--limit-test", "10", "--workers", "0", "--device", "cpu", "--figure-images", "3",
            "--loc-lr-scale", "1"]  # fmt: skip
    assert table3.run(parse(*argv)) == 0
    results = {key: json.loads((out / key / "result.json").read_text()) for key in table3.RUNS}
    assert results["cnn-224"]["image_size"] == 16 and results["2x-448"]["image_size"] == 32
    assert results["2x-448"]["crop_size"] == results["2x-224"]["crop_size"] == 16
    for key, result in results.items():
        assert result["test_images"] == 10 and result["classes"] == 10 and 0 <= result["accuracy"] <= 100
        assert ("centre_in_box" in result) == (key != "cnn-224")
    assert len(results["4x-448"]["centre_in_box_per_transformer"]) == 4
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

    monkeypatch.setattr(table3, "train", fail)
    assert table3.run(parse(*argv)) == 0


def test_default_backbone_without_timm_says_what_to_install(shared_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    args = parse("--cub-root", str(shared_data / "cub_200_2011_subset"), "--out", str(tmp_path), "--runs", "cnn-224")
    with pytest.raises(KeyError, match=r"stn\[cub\]"):
        table3.run(args)


def test_attention_stats():
    theta = torch.tensor([[[0.5, 0.0, 0.0], [0.5, 0.5, 0.5]]])  # windows [-.5, .5]^2 and [0, 1]^2
    boxes = torch.tensor([[-1.0, -1.0, 0.25, 0.25]])
    stats = table3.attention_stats(theta, boxes)
    assert stats["centre_in_box_per_transformer"] == [1.0, 0.0]
    assert stats["window_on_box_per_transformer"] == pytest.approx([0.5625, 0.0625])
    assert stats["centre_in_box"] == 0.5 and stats["window_on_box"] == pytest.approx(0.3125)


def test_draw_attention_writes_a_png(tmp_path):
    images = torch.zeros(5, 3, 20, 30)
    boxes = torch.tensor([[-0.9, -0.9, 0.9, 0.9]]).expand(5, 4)
    windows = torch.tensor([[-0.5, -0.5, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]]).expand(5, 2, 4)
    path = table3.draw_attention(images, boxes, windows, tmp_path / "a.png")
    with Image.open(path) as figure:
        assert figure.size == (960, 480)  # 4 columns x 2 rows of 3-inch panels at 80 dpi
        pixels = np.asarray(figure.convert("RGB")).reshape(-1, 3)
    for colour in [(31, 119, 180), (255, 127, 14), (255, 255, 255)]:  # the two transformers' colours, the box
        assert (np.abs(pixels.astype(int) - colour).sum(1) < 30).any(), colour
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
