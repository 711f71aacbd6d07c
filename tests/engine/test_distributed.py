"""Data-parallel training: two CPU processes (gloo) end with identical weights, equal to one process's; a rank
that dies is named by the survivor in one line. Device names are checked."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from stn.engine.config import TrainConfig
from stn.engine.distributed import DistContext, all_reduce_sum, any_process, init_distributed, resolve_device
from stn.experiments._common import make_trainer


def trainer(data_dir: Path, run_dir: Path):
    config = TrainConfig(epochs=2, batch_size=16, device="cpu", theta_samples=2)
    return make_trainer(
        "r", "st-fcn-aff", config, run_dir, model_options={"target_params": 40_000}, num_train=64, num_test=32,
        data_dir=str(data_dir), progress=False, figures=False,
    )  # fmt: skip


def _worker(rank: int, world: int, port: int, data_dir: Path, out: Path) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    run = trainer(data_dir, out / "run")
    result = run.fit()
    torch.save({"weights": run.model.state_dict(), "result": result.summary}, out / f"rank{rank}.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_torchrun_there_is_one_process() -> None:
    ctx = init_distributed(torch.device("cpu"))
    assert ctx == DistContext() and ctx.is_main and not ctx.distributed
    values = torch.tensor([1.0, 2.0])
    assert all_reduce_sum(values, ctx) is values
    assert any_process(True, ctx, torch.device("cpu")) and not any_process(False, ctx, torch.device("cpu"))


def test_two_processes_end_with_identical_weights(tiny_mnist: Path, tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, free_port(), tiny_mnist, tmp_path), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for key, value in rank0["weights"].items():
        assert torch.equal(value, rank1["weights"][key]), key
    assert rank0["result"]["test_error"] == rank1["result"]["test_error"]  # evaluation is combined across ranks
    assert (tmp_path / "run" / "checkpoint.pt").is_file()  # written by rank 0

    single = trainer(tiny_mnist, tmp_path / "single")
    single.fit()  # the same global batches in one process: the same weights up to rounding
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(rank0["weights"][key], value, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("tpu", r"unknown device 'tpu': choose auto \(CUDA when available\), cpu, cuda or cuda:<index>"),
        ("", r"unknown device '': choose auto"),
        ("meta", r"device 'meta' cannot train a model here: choose auto"),
        ("cuda:99", r"cuda"),  # no CUDA here, or not 100 devices
    ],
)
def test_unknown_or_unusable_devices_are_refused_listing_the_choices(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_device(name)
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("auto").type in ("cpu", "cuda")


def test_when_a_rank_dies_the_survivor_says_which_in_one_line(tiny_mnist: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "stn", "train", "--data", "r", "--model", "fcn", "--target-params", "5000",
            "--iterations", "100000", "--batch-size", "8", "--num-train", "96", "--num-test", "16", "--data-dir",
            str(tiny_mnist), "--out", str(run), "--quiet", "--no-figures", "--device", "cpu"]  # fmt: skip
    job = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    envs = [{**os.environ, **job, "RANK": str(rank), "LOCAL_RANK": str(rank)} for rank in (0, 1)]
    ranks = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e) for e in envs]
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:  # both are training
            assert all(r.poll() is None for r in ranks), ranks[0].communicate()[1]
            time.sleep(0.1)
        ranks[1].kill()
        killed = time.monotonic()
        _, err = ranks[0].communicate(timeout=60)
        assert time.monotonic() - killed < 60
    finally:
        for rank in ranks:
            rank.kill()
            rank.wait()
    assert ranks[0].returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stn train: error: rank 0: rank 1 of the 2 processes died" in lines[0], err
    assert "--resume" in lines[0] and (run / "checkpoint.pt").is_file()
