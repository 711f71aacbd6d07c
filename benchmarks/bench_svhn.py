"""How much slower is ST-CNN Multi than the CNN on SVHN? (The paper: 6% slower, forward + backward.)

Times one training step's forward + backward (no optimiser update) of the three Table 2 models on a random batch,
interleaving the models so that machine noise hits them alike, and prints the median time and each model's
ratio to the CNN. On a GPU the timings synchronise the device.

Usage::

    python benchmarks/bench_svhn.py                       # batch 128, 54x54 inputs (the 64px crops)
    python benchmarks/bench_svhn.py --crop 128            # 108x108 inputs (the loose 128px crops)
    python benchmarks/bench_svhn.py --smoke               # tiny sizes, one run (CI)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from stn.data.svhn import INPUT_SIZE
from stn.engine.distributed import resolve_device
from stn.experiments.table2 import MODELS
from stn.models import create_model
from stn.models.svhn import sequence_loss


def step_time(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds for one forward + backward pass."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    model.zero_grad(set_to_none=True)
    sync()
    start = time.perf_counter()
    sequence_loss(model(x), y).backward()
    sync()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crop", type=int, choices=sorted(INPUT_SIZE), default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per model (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true", help="batch 2 of 16x16 inputs, one timed step")
    args = parser.parse_args(argv)
    size = 16 if args.smoke else INPUT_SIZE[args.crop]
    batch, repeats, warmup = (2, 1, 0) if args.smoke else (args.batch_size, args.repeats, args.warmup)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, 11, (batch, 5), device=device)
    models = {label: create_model(name, in_shape=(3, size, size)).to(device) for label, name in MODELS.values()}
    times: dict[str, list[float]] = {label: [] for label in models}
    for i in range(warmup + repeats):
        for label, model in models.items():
            seconds = step_time(model, x, y)
            if i >= warmup:
                times[label].append(seconds)
    base = statistics.median(times["CNN"])
    print(f"forward + backward, batch {batch} of 3x{size}x{size}, {device}, median of {repeats}")
    print("| model | params | ms / step | vs CNN |\n|---|---|---|---|")
    for label, model in models.items():
        median = statistics.median(times[label])
        params = sum(p.numel() for p in model.parameters())
        print(f"| {label} | {params:,} | {1000 * median:.1f} | {median / base:.3f}x |")
    print("paper: ST-CNN Multi is 6% slower than the CNN (1.06x)")


if __name__ == "__main__":
    main()
