"""Tests for stn.experiments.table2 (SVHN, Table 2) on the 4 real SVHN photos: the run end to end and its table,
the sequence task, and the engine on an SVHN model: N steps == N/2 + SIGTERM + resume + N/2, a 2-process torchrun
equal to one process, and `stn eval` reproducing the recorded test metrics exactly."""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch
from torch import nn

from stn.cli import main
from stn.data.specs import build, svhn_spec
from stn.data.svhn import DigitBox, SVHNRecord, write_digit_struct
from stn.engine.checkpoint import load_checkpoint, load_model
from stn.engine.config import TrainConfig
from stn.engine.evaluation import evaluate
from stn.engine.tasks import SequenceTask
from stn.engine.trainer import Trainer
from stn.experiments import table2
from stn.io import read_jsonl


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


# A small SVHN ST-CNN: the paper's convolutions, narrow fully connected layers (fast, small checkpoints).
SMALL = {"fc_units": (16, 16, 16)}


def spec(svhn_root, tmp_path):
    return svhn_spec(svhn_root, crop=64, splits=("train",), cache_dir=tmp_path / "cache")


def test_defaults_and_budgets():
    args = parse("--svhn-root", "x")
    assert (args.crop, args.budget, args.models) == (64, "quick", ["cnn", "single", "multi"])
    assert table2.BUDGETS["paper"].splits == ("train", "extra") and table2.BUDGETS["quick"].splits == ("train",)
    quick = table2.BUDGETS["quick"].config()
    assert (quick.iterations, quick.batch_size, quick.lr, quick.localization_lr_scale) == (5000, 128, 0.01, 0.1)


def test_run_end_to_end_writes_the_table_and_skips_finished_models(svhn_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = ["--svhn-root", str(svhn_root), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--models", "multi", "--iterations", "1", "--batch-size", "2", "--device", "cpu", "--quiet"]  # fmt: skip
    assert table2.run(parse(*argv)) == 0
    run_dir = out / "64px" / "multi"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_samples"] == 4 and summary["steps"] == 1 and summary["data"]["splits"] == ["train"]
    table = (out / "table2.md").read_text()
    for number in ("4.0", "5.6", "3.9", "4.5", "3.7", "3.6"):
        assert f"| {number} |" in table
    multi = next(line for line in table.splitlines() if line.startswith("| ST-CNN Multi |"))
    assert multi.startswith(f"| ST-CNN Multi | 3.6 | {100 * summary['test_error']:.2f} | 3.9 | — |")
    assert next(line for line in table.splitlines() if line.startswith("| CNN |")).count("| — |") == 2
    model, checkpoint = load_model(run_dir)  # the run folder's checkpoint rebuilds the model
    assert checkpoint["model_name"] == "svhn-st-cnn-multi" and len(model.transformers) == 4
    assert checkpoint["task"] == {"name": "sequence", "positions": 5, "classes": 11}

    def fail(*args, **kwargs):
        raise AssertionError("a finished model was trained again")

    monkeypatch.setattr(table2, "make_trainer", fail)
    assert table2.run(parse(*argv)) == 0


def test_out_naming_an_existing_file_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        parse("--svhn-root", "x", "--out", str(tmp_path / "file"))
    assert "existing file" in capsys.readouterr().err


class ConstantSequence(nn.Module):
    def __init__(self, digits):
        super().__init__()
        self.logits = nn.functional.one_hot(torch.tensor(digits), 11).float()

    def forward(self, x):
        return self.logits.expand(len(x), -1, -1)


def test_the_sequence_task_counts_whole_sequences(svhn_root, tmp_path):
    test = build(spec(svhn_root, tmp_path), "test")
    assert test[0][0].shape == (3, 54, 54)  # the central crop
    task = SequenceTask(5, 11)
    assert evaluate(ConstantSequence([10] * 5), test, task, device="cpu")["error"] == 1.0
    scores = evaluate(ConstantSequence([1, 9, 10, 10, 10]), test, task, device="cpu")
    assert scores["error"] == 0.75  # only 1.png is "19"


def small_run(svhn_root, tmp_path, run_dir, **config):
    config = TrainConfig(**{"iterations": 4, "batch_size": 2, "device": "cpu", "theta_samples": 2, **config})
    return table2.make_trainer("single", config, spec(svhn_root, tmp_path), run_dir, model_options=SMALL,
                               progress=False)  # fmt: skip


def test_n_steps_equal_half_then_sigterm_then_resume(svhn_root, tmp_path, monkeypatch):
    straight = small_run(svhn_root, tmp_path, tmp_path / "straight")
    straight.fit()
    original = Trainer.train_step

    def step_then_sigterm(self, x, y):
        out = original(self, x, y)
        if self.step == 1:  # mid-epoch: the second of the 4 steps (2 per epoch) is the last before the stop
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "train_step", step_then_sigterm)
    stopped = small_run(svhn_root, tmp_path, tmp_path / "resumed").fit()
    assert stopped.status == "interrupted" and stopped.step == 2
    monkeypatch.undo()
    resumed = small_run(svhn_root, tmp_path, tmp_path / "resumed").fit()
    assert resumed.finished and resumed.step == 4
    a, b = load_checkpoint(tmp_path / "straight")["model"], load_checkpoint(tmp_path / "resumed")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key  # dropout and random crops included
    keys = ("epoch", "train_loss", "train_error", "test_loss", "test_error", "test_position_error")
    assert [[r[k] for k in keys] for r in read_jsonl(tmp_path / "straight" / "metrics.jsonl")] == [
        [r[k] for k in keys] for r in read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    ]


def test_stn_eval_reproduces_the_recorded_test_metrics_exactly(svhn_root, tmp_path, capsys):
    small_run(svhn_root, tmp_path, tmp_path / "run", iterations=2).fit()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    for metric in ("loss", "error", "position_error"):
        assert result[f"test_{metric}"] == summary[f"test_{metric}"], metric
    assert result["test_samples"] == 4


_DDP_SCRIPT = """
import os, sys, torch
from pathlib import Path
from stn.engine.config import TrainConfig
from stn.experiments import table2
from stn.data.specs import svhn_spec

torch.set_num_threads(1)
root, cache, out = map(Path, sys.argv[1:4])
config = TrainConfig(iterations=4, batch_size=4, device="cpu", theta_samples=2)
spec = svhn_spec(root, crop=64, splits=("train",), cache_dir=cache)
options = {"fc_units": (16, 16, 16), "batch_norm": False, "dropout": 0.0}
trainer = table2.make_trainer("single", config, spec, out, model_options=options, progress=False)
result = trainer.fit()
rank = int(os.environ.get("RANK", "0"))
torch.save({"weights": trainer.model.state_dict(), "summary": result.summary}, out.parent / f"{out.name}-rank{rank}.pt")
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_torchrun_processes_match_one_process(svhn_root, tmp_path):
    script = tmp_path / "ddp_svhn.py"
    script.write_text(_DDP_SCRIPT)
    args = [str(script), str(svhn_root), str(tmp_path / "cache"), str(tmp_path / "ddp")]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(free_port())]  # fmt: skip
    subprocess.run([*torchrun, *args], check=True, env=env, timeout=600, capture_output=True)
    args[-1] = str(tmp_path / "single")
    subprocess.run([sys.executable, *args], check=True, env=env, timeout=600, capture_output=True)
    rank0, rank1 = (torch.load(tmp_path / f"ddp-rank{r}.pt") for r in (0, 1))
    single = torch.load(tmp_path / "single-rank0.pt")
    for key, value in single["weights"].items():
        assert torch.equal(rank0["weights"][key], rank1["weights"][key]), key
        torch.testing.assert_close(rank0["weights"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert rank0["summary"]["test_error"] == single["summary"]["test_error"]
    assert load_checkpoint(tmp_path / "ddp")["step"] == 4  # written by rank 0
