"""Compare the arms of a sweep over epochs: validation error, θ scale mean ± std and shift_mean, side by side.

Each positional argument is one arm: a run folder (holding ``metrics.jsonl``) or the output folder of a
``stn reproduce table1`` grid that holds exactly one run (``<data>/<model>/seed<k>/metrics.jsonl``); the arm's
label is the folder's name. ``--out`` is the PNG to write: three panels (val error, θ scale mean ± std over the
trainer's 512 θ-diagnostic test digits, grid centre's mean distance from the canvas centre) with one line per arm.

Usage (the figure of ``results/stfcn-sweep``)::

    python studies/sweep_curves.py results/stfcn-sweep/base results/stfcn-sweep/loclr10 \\
        results/stfcn-sweep/loclr0.1 results/stfcn-sweep/loclr0.03 results/stfcn-sweep/loclr0.3 \\
        --out results/stfcn-sweep/sweep.png

``--every STEP`` prints, per arm, the epochs 1-3, every STEP-th epoch and the last: lr, train / val / test error (%),
θ scale mean ± std, shift_mean and outside_frac (without ``--out``, only that)::

    python studies/sweep_curves.py results/stfcn-sweep/base --every 5
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from stn.io import atomic_path, read_jsonl


def metrics_file(arm: Path) -> Path:
    """The ``metrics.jsonl`` of an arm: in the folder itself, or of the one run of a reproduce grid folder."""
    if (arm / "metrics.jsonl").is_file():
        return arm / "metrics.jsonl"
    found = sorted(arm.glob("*/*/seed*/metrics.jsonl"))
    if len(found) != 1:
        what = "no run" if not found else f"{len(found)} runs ({', '.join(str(f.parent) for f in found)})"
        raise ValueError(f"{arm}: expected a run folder or a grid folder with one run, found {what}")
    return found[0]


def plot_arms(arms: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Draw the three panels for ``{label: metrics rows}`` into the PNG ``path``."""
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for label, rows in arms.items():
        e = [r["epoch"] for r in rows]
        ax[0].plot(e, [100 * r.get("val_error", float("nan")) for r in rows], label=label)
        m = [r["transformer.scale_mean"] for r in rows]
        s = [r["transformer.scale_std"] for r in rows]
        (line,) = ax[1].plot(e, m, label=label)
        low, high = [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)]
        ax[1].fill_between(e, low, high, color=line.get_color(), alpha=0.2)
        ax[2].plot(e, [r["transformer.shift_mean"] for r in rows], label=label)
    ax[0].set(yscale="log", ylim=(0.8, 100), xlabel="epoch", ylabel="val error (%)", title="validation error")
    ax[1].set(ylim=(0, 1.5), xlabel="epoch", ylabel="θ scale (mean ± std over 512 test digits)", title="θ scale")
    ax[2].set(
        ylim=(0, 1), xlabel="epoch", ylabel="shift_mean (normalised)", title="grid centre's mean distance from centre"
    )
    for a in ax:
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=90)
    finally:
        plt.close(fig)
    return path


def epoch_table(rows: Sequence[dict[str, Any]], step: int) -> str:
    """Epochs 1-3, every ``step``-th and the last: lr, errors (%) and θ statistics, one line each."""
    lines = ["epoch  lr      train%  val%   test%  scale(mean±std)  shift  outside"]
    for r in rows:
        if r["epoch"] in (1, 2, 3) or r["epoch"] % step == 0 or r is rows[-1]:
            lines.append(
                f"{r['epoch']:5d}  {r['lr']:.4f}  {100 * r['train_error']:6.2f}  "
                f"{100 * r.get('val_error', float('nan')):5.2f}  {100 * r['test_error']:5.2f}"
                f"  {r['transformer.scale_mean']:.3f}±{r['transformer.scale_std']:.3f}"
                f"      {r['transformer.shift_mean']:.3f}  {r['transformer.outside_frac']:.3f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arms", nargs="+", type=Path, help="run folders, or grid folders holding one run each")
    parser.add_argument("--out", type=Path, default=None, help="the PNG to write (e.g. results/stfcn-sweep/sweep.png)")
    parser.add_argument("--every", type=int, default=None, metavar="STEP", help="print every STEP-th epoch per arm")
    args = parser.parse_args(argv)
    if args.out is None and args.every is None:
        parser.error("nothing to do: give --out (the figure), --every (the epoch table) or both")
    if args.every is not None and args.every < 1:
        parser.error(f"--every must be >= 1, got {args.every}")
    arms: dict[str, list[dict[str, Any]]] = {}
    for arm in args.arms:
        rows = read_jsonl(metrics_file(arm))
        if not rows:
            raise ValueError(f"{arm}: metrics.jsonl holds no epochs")
        arms[arm.name] = rows
    if len(arms) != len(args.arms):
        parser.error("two arms share a folder name: their lines would share a label")
    if args.every is not None:
        for label, rows in arms.items():
            print(f"{label}\n{epoch_table(rows, args.every)}\n")
    if args.out is not None:
        print(f"wrote {plot_arms(arms, args.out)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError, KeyError) as err:  # a missing run folder or metric: one line, not a traceback
        sys.exit(f"{Path(__file__).name}: error: {err}")
