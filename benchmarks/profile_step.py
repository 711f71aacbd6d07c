"""Where a Table 1 training step spends its time: ``torch.profiler`` over SGD steps of a model, by operator and
input shape (how the one-channel convolution's input gradient was found, see ``stn.modules.conv``).

It also times the step with the classifier's first convolution as a plain ``nn.Conv2d`` (oneDNN's input gradient,
the "before") and prints the ratio.

Usage::

    python benchmarks/profile_step.py --model st-cnn-aff       # RTS (42x42), batch 256, channels-last
    python benchmarks/profile_step.py --model cnn --threads 2
    python benchmarks/profile_step.py --smoke                  # tiny batch (what the tests run)
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench_train import sgd_step, with_nn_conv2d  # the same 'before' model and SGD step as the benchmark
from stn.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="st-cnn-aff", help="a Table 1 model (default st-cnn-aff)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="profiled and timed steps (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--rows", type=int, default=8, help="operators shown (default 8)")
    parser.add_argument("--smoke", action="store_true", help="batch 8, one step")
    args = parser.parse_args()
    if args.smoke:
        args.batch_size, args.steps = 8, 1
    torch.set_num_threads(args.threads)
    ours = create_model(args.model, in_shape=(1, 42, 42), seed=0).to(memory_format=torch.channels_last)
    before = with_nn_conv2d(create_model(args.model, in_shape=(1, 42, 42), seed=0)).to(
        memory_format=torch.channels_last
    )
    x = torch.rand(args.batch_size, 1, 42, 42).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,))
    steps = {"stn": sgd_step(ours, x, y), "nn.Conv2d first layer": sgd_step(before, x, y)}
    for step in steps.values():  # warm-up: oneDNN primitives are created on first use
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            steps["stn"]()
    table = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=args.rows)
    print(f"{args.model}, batch {args.batch_size}, {args.threads} thread(s), channels-last, {args.steps} steps:")
    print(table)
    times = {name: [] for name in steps}
    for _ in range(args.steps):  # interleaved, so that a busy machine slows both alike
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    best = {name: min(t) for name, t in times.items()}
    for name, t in best.items():
        print(f"{name:<24} {1000 * t:8.1f} ms/step {args.batch_size / t:8.0f} images/s")
    print(f"speed-up of stn.modules.conv: {best['nn.Conv2d first layer'] / best['stn']:.2f}x")


if __name__ == "__main__":
    main()
