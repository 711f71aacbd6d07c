"""``stn reproduce colocalization``: the data sets and end-to-end quick runs of both methods (the methods
themselves: tests/models/test_colocalization.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from stn.data import load_mnist
from stn.data.colocalization import colocalization_set
from stn.engine.checkpoint import load_checkpoint, save_checkpoint
from stn.experiments import colocalization
from stn.models import create_model


@pytest.mark.parametrize("variant", ["coloc", "coloc-tc"])
def test_colocalization_sets_hold_one_class_inside_its_box(tiny_mnist: Path, variant: str) -> None:
    test = load_mnist(tiny_mnist, "test")
    images, boxes = colocalization_set(test, 3, variant, count=3, seed=1)
    assert images.shape == (3, 1, 84, 84)
    torch.testing.assert_close(boxes[:, 2:] - boxes[:, :2], torch.full((3, 2), 28.0))
    inside = torch.zeros(84, 84, dtype=torch.bool).repeat(3, 1, 1)
    for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
        inside[i, y0:y1, x0:x1] = True
    ink = images[:, 0] > 0
    digit3 = test.images[test.labels == 3][0].float().div(255)
    in_box = images[:, 0][inside].sum()  # the whole digit is in its box (clutter, combined by max, may add ink)
    assert (in_box - 3 * digit3.sum()).abs() < 1 if variant == "coloc" else in_box > 3 * digit3.sum() - 1
    assert (ink & ~inside).any() == (variant == "coloc-tc")  # clutter only in TC
    again, _ = colocalization_set(test, 3, variant, count=3, seed=1)
    torch.testing.assert_close(again, images)
    with pytest.raises(ValueError, match="class 3"):
        colocalization_set(test, 3, variant, count=50)
    with pytest.raises(ValueError, match="variant"):
        colocalization_set(test, 3, "tc", count=3)


def _args(tiny_mnist: Path, out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    colocalization.add_arguments(parser)
    return parser.parse_args(
        [
            "--data-dir",
            str(tiny_mnist),
            "--out",
            str(out),
            "--runs-dir",
            str(out.parent / "runs"),
            "--digits",
            "0",
            "1",
            "--iterations",
            "2",
            "--batch-size",
            "16",
            "--num-images",
            "2",
            "--stride",
            "14",
            "--fit-steps",
            "3",
            "--steps",
            "3",
            "--pairs",
            "2",
            "--device",
            "cpu",
            *extra,
        ]
    )


def test_quick_run_end_to_end_writes_table_results_and_figure(tiny_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "coloc"
    assert colocalization.run(_args(tiny_mnist, out)) == 0
    record = json.loads((out / "results.json").read_text())
    assert record["method"] == "sgd" and record["steps"] == 3 and record["pairs"] == 2
    assert set(record["scores"]) == {"0", "1"} and set(record["scores"]["0"]) == {"T", "TC"}
    for per_dataset in record["scores"].values():
        for score in per_dataset.values():
            assert 0 <= score["localised_percent"] <= 100 and 0 <= score["held_out_percent"] <= 100
            assert score["triplet_loss"] >= 0
    table = (out / "colocalization.md").read_text()
    assert "| 0 |" in table and "| 1 |" in table and "T 100%" in table and "TC 75-93%" in table
    assert "T held out (%)" in table and "the paper's method" in table
    assert (out / "boxes.png").stat().st_size > 1000
    run = tmp_path / "runs" / "sgd" / "T-digit0-seed0"  # the paper's SGD, by the training engine
    sgd = load_checkpoint(run / "checkpoint.pt")
    assert (sgd["model_name"], sgd["task"]["name"], sgd["step"]) == ("coloc-triplet", "triplet", 3)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_localised"] == record["scores"]["0"]["T"]["localised_percent"] / 100
    encoder = tmp_path / "runs" / "encoder" / "checkpoint.pt"
    checkpoint = load_checkpoint(encoder)  # the Table 1 CNN on R, by the training engine, with the recipe given
    assert checkpoint["model_name"] == "cnn" and checkpoint["data"]["variant"] == "r"
    assert (checkpoint["step"], checkpoint["config"]["batch_size"], checkpoint["config"]["lr"]) == (2, 16, 0.03)
    assert record["encoder_iterations"] == 2 and record["digits"] == [0, 1] and record["stride"] == 14
    stamp = encoder.stat().st_mtime_ns
    assert colocalization.run(_args(tiny_mnist, out, "--datasets", "T")) == 0  # reuses the trained encoder
    assert encoder.stat().st_mtime_ns == stamp
    assert "TC ours" not in (out / "colocalization.md").read_text()
    encoder.unlink()  # as results folders in git keep none: said, not retrained
    with pytest.raises(FileNotFoundError, match=r"encoder: the finished run .* keeps no checkpoint\.pt"):
        colocalization.run(_args(tiny_mnist, out, "--datasets", "T"))


def test_the_search_departure_runs_through_the_engine_too(tiny_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "search"
    assert colocalization.run(_args(tiny_mnist, out, "--method", "search", "--datasets", "T")) == 0
    record = json.loads((out / "results.json").read_text())
    assert record["method"] == "search" and record["stride"] == 14 and set(record["scores"]["1"]) == {"T"}
    assert "our departure" in (out / "colocalization.md").read_text()
    fit = load_checkpoint(tmp_path / "runs" / "search" / "T-digit1-seed0" / "checkpoint.pt")
    assert (fit["model_name"], fit["task"]["name"], fit["step"]) == ("coloc-locator", "regression", 3)


def test_an_encoder_checkpoint_for_other_image_sizes_is_refused(tiny_mnist: Path, tmp_path: Path) -> None:
    model = create_model("cnn", in_shape=(1, 42, 42))
    path = save_checkpoint(
        {
            "config": {"data": "rts"},
            "model_name": "cnn",
            "model_kwargs": {"in_shape": [1, 42, 42]},
            "model": model.state_dict(),
            "step": 1,
        },
        tmp_path / "rts.pt",
    )
    with pytest.raises(ValueError, match="28x28"):
        colocalization.run(_args(tiny_mnist, tmp_path / "out", "--encoder", str(path)))
