"""How long does ``stn`` take to start? ``import stn``, ``stn --help`` and ``stn train --help`` against
``import torch``, the floor of anything built on PyTorch.

Each command runs as a fresh process, ``--runs`` times, interleaved (so that a slow moment of the machine hits
every command alike); the table gives the median wall time of each and its ratio to ``import torch``. The
targets are within 1.2x for ``import stn`` and within 1.5x for the help of the command line.

Usage:
    python benchmarks/bench_startup.py              # 15 runs of each
    python benchmarks/bench_startup.py --smoke      # 2 runs of each, seconds
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS: dict[str, list[str]] = {
    "import torch": [sys.executable, "-c", "import torch"],
    "import stn": [sys.executable, "-c", "import stn"],
    "stn --help": [sys.executable, "-m", "stn", "--help"],
    "stn train --help": [sys.executable, "-m", "stn", "train", "--help"],
}
TARGETS = {"import stn": 1.2, "stn --help": 1.5, "stn train --help": 1.5}


def _time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(runs: int) -> dict[str, float]:
    """Median wall time of each command over ``runs`` interleaved runs (after one unmeasured warm-up each)."""
    for command in COMMANDS.values():
        _time(command)  # file-system caches warm
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):
        for name, command in COMMANDS.items():
            times[name].append(_time(command))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (default 15)")
    parser.add_argument("--smoke", action="store_true", help="2 runs of each")
    args = parser.parse_args()
    medians = measure(2 if args.smoke else args.runs)
    floor = medians["import torch"]
    print(f"{'command':<18} {'median':>8} {'vs import torch':>16}  target")
    for name, seconds in medians.items():
        target = f"<= {TARGETS[name]}x" if name in TARGETS else ""
        print(f"{name:<18} {seconds:7.3f}s {seconds / floor:15.2f}x  {target}")


if __name__ == "__main__":
    main()
