"""Tests for stn.experiments.table2 (SVHN, Table 2): the run end to end on real SVHN photos, the table, the loop."""

import argparse
import json
import shutil

import pytest
import torch
from torch import nn

from stn.data.svhn import DigitBox, SVHNRecord, SVHNSequences, write_digit_struct
from stn.engine.checkpoint import load_model
from stn.experiments import table2


@pytest.fixture
def svhn_root(tmp_path, shared_data):
    """train/ and test/ folders with the 4 real format-1 photos and their boxes."""
    sample = shared_data / "svhn" / "format1_train_sample"
    entries = json.loads((sample / "digitStruct.json").read_text())
    records = [
        SVHNRecord(e["filename"], tuple(DigitBox(b["left"], b["top"], b["width"], b["height"], int(b["label"]) % 10)
                                        for b in e["boxes"]))
        for e in entries
    ]  # fmt: skip
    for split in ("train", "test"):
        folder = tmp_path / "svhn" / split
        folder.mkdir(parents=True)
        for record in records:
            shutil.copy(sample / record.filename, folder / record.filename)
        write_digit_struct(folder / "digitStruct.mat", records)
    return tmp_path / "svhn"


def parse(*argv):
    parser = argparse.ArgumentParser()
    table2.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults():
    args = parse("--svhn-root", "x")
    assert (args.crop, args.budget, args.models) == (64, "quick", ["cnn", "single", "multi"])
    assert table2.BUDGETS["paper"].splits == ("train", "extra") and table2.BUDGETS["quick"].splits == ("train",)


def test_run_end_to_end_writes_the_table_and_skips_finished_models(svhn_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = [
        "--svhn-root",
        str(svhn_root),
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--models",
        "multi",
        "--iterations",
        "1",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--save-models",
    ]
    assert table2.run(parse(*argv)) == 0
    result = json.loads((out / "64px" / "multi" / "result.json").read_text())
    assert result["test_images"] == 4 and result["iterations"] == 1 and result["splits"] == ["train"]
    table = (out / "table2.md").read_text()
    for number in ("4.0", "5.6", "3.9", "4.5", "3.7", "3.6"):
        assert f"| {number} |" in table
    multi = next(line for line in table.splitlines() if line.startswith("| ST-CNN Multi |"))
    assert multi.startswith(f"| ST-CNN Multi | 3.6 | {result['sequence_error']:.2f} | 3.9 | — |")
    assert next(line for line in table.splitlines() if line.startswith("| CNN |")).count("| — |") == 2
    model, checkpoint = load_model(out / "64px" / "multi" / "model.pt")
    assert checkpoint["model_name"] == "svhn-st-cnn-multi" and len(model.transformers) == 4

    def fail(*args, **kwargs):
        raise AssertionError("a finished model was trained again")

    monkeypatch.setattr(table2, "train", fail)
    assert table2.run(parse(*argv)) == 0


def test_read_batch_spans_datasets_in_order(svhn_root, tmp_path):
    train = SVHNSequences(svhn_root, "train", cache_dir=tmp_path / "c", progress=False)
    test = SVHNSequences(svhn_root, "test", cache_dir=tmp_path / "c", progress=False)
    images, labels = table2._read_batch([train, test], torch.tensor([5, 0, 7, 2]))
    assert images.shape == (4, 3, 64, 64)
    torch.testing.assert_close(images[0], test.batch([1])[0][0])
    torch.testing.assert_close(images[1], train.batch([0])[0][0])
    assert labels[:, 0].tolist() == [2, 1, 9, 2]


class ConstantSequence(nn.Module):
    def __init__(self, digits):
        super().__init__()
        self.logits = nn.functional.one_hot(torch.tensor(digits), 11).float()

    def forward(self, x):
        return self.logits.expand(len(x), -1, -1)


def test_evaluate_counts_whole_sequences(svhn_root, tmp_path):
    test = SVHNSequences(svhn_root, "test", cache_dir=tmp_path / "c", progress=False)
    cpu = torch.device("cpu")
    assert table2.evaluate(ConstantSequence([10] * 5), test, 54, cpu) == 1.0
    assert table2.evaluate(ConstantSequence([1, 9, 10, 10, 10]), test, 54, cpu) == 0.75  # only 1.png is "19"


def test_train_returns_finite_losses(svhn_root, tmp_path):
    train = SVHNSequences(svhn_root, "train", cache_dir=tmp_path / "c", progress=False)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 20 * 20, 55), nn.Unflatten(1, (5, 11)))
    budget = table2.Budget(iterations=5, splits=("train",), batch_size=3)
    losses = table2.train(model, [train], budget, 20, torch.device("cpu"))
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses)))
