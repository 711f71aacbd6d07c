"""Which recipe gets more out of each step (issue #12, item 2): the ST-CNN Aff on RTS at a fixed step budget, every
arm with the same seeds, through the library's own ``stn reproduce table1`` (so an arm is exactly what a user runs).

Arms (all from the quick budget: 1,000 steps of 256 at peak lr 0.03, SGD with momentum 0.9):

* ``step``: the paper's schedule (x0.1 at 1/3 and 2/3 of training) — the quick budget as it is;
* ``cosine``: cosine decay to 0 after a 5% linear warm-up;
* ``cosine-nesterov``: the same with Nesterov momentum.

Run (about 5 minutes per run on 2 cores; finished runs are reused)::

    python studies/recipe_ablation.py --data-dir ../shared/data/mnist --out results/recipe-ablation --seeds 2

It writes ``ablation.md`` (mean ± standard deviation over the seeds, and every run) and ``results.json``. The arm
is chosen on the validation error (the last 10,000 training digits, ``stn reproduce table1``'s default), never on
the test error (:func:`stn.experiments.selection.best_mean_validation`); runs made before validation existed show
``—`` there and are no candidates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from stn.experiments.selection import best_mean_validation
from stn.io import format_markdown_table, write_text_atomic

MODEL = "st-cnn-aff"
ARMS: dict[str, list[str]] = {
    "step": [],
    "cosine": ["--schedule", "cosine", "--warmup", "0.05"],
    "cosine-nesterov": ["--schedule", "cosine", "--warmup", "0.05", "--nesterov"],
}


def run_arm(arm: str, args: argparse.Namespace) -> None:
    command = [
        sys.executable, "-m", "stn", "reproduce", "table1", "--data", "RTS", "--models", MODEL,
        "--budget", "quick", "--seeds", str(args.seeds), "--out", str(args.out / arm), "--quiet",
        *(["--data-dir", args.data_dir] if args.data_dir else []), *args.extra, *ARMS[arm],
    ]  # fmt: skip
    returncode = subprocess.run(command).returncode
    if returncode:  # the run has printed its one-line error: end with its exit code, nothing more
        sys.exit(returncode)


def collect(out: Path, arms: list[str], seeds: int) -> list[dict]:
    results = []
    for arm in arms:
        for seed in range(seeds):
            summary = out / arm / "rts" / MODEL / f"seed{seed}" / "summary.json"
            if summary.is_file():
                s = json.loads(summary.read_text())
                results.append(
                    {
                        "arm": arm,
                        "seed": seed,
                        "val_error": s.get("val_error"),
                        "test_error": s["test_error"],
                        "time_s": s["time_s"],
                    }
                )
    return results


def _mean_sd(runs: list[dict], key: str) -> str:
    """``mean ± sd`` of ``key`` over the runs, in %; ``—`` when a run lacks it."""
    if any(r.get(key) is None for r in runs):
        return "—"
    values = [100 * r[key] for r in runs]
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder with the four MNIST files")
    parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per arm)")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 per arm (default 2)")
    parser.add_argument("--table-only", action="store_true", help="only write the table from the finished runs")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more stn reproduce table1 options")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    args.extra = [a for a in args.extra if a != "--"]
    if not args.table_only:
        for arm in args.arms:
            run_arm(arm, args)
    results = collect(args.out, args.arms, args.seeds)
    summary_rows, run_rows = [], []
    for arm in args.arms:
        runs = [r for r in results if r["arm"] == arm]
        if runs:
            cells = [_mean_sd(runs, "val_error"), _mean_sd(runs, "test_error")]
            summary_rows.append([arm, " ".join(ARMS[arm]) or "(quick budget)", len(runs), *cells])
    for r in results:
        val = "—" if r.get("val_error") is None else f"{100 * r['val_error']:.2f}"
        run_rows.append([r["arm"], r["seed"], val, f"{100 * r['test_error']:.2f}", f"{r['time_s'] / 60:.1f}"])
    chosen = best_mean_validation({arm: [r for r in results if r["arm"] == arm] for arm in args.arms})
    verdict = (
        f"Chosen on validation: **{chosen[0]}** (mean validation error {100 * chosen[1]:.2f}%)."
        if chosen
        else "No arm was chosen: these runs held no validation data out (made before the protocol)."
    )
    command = "python studies/recipe_ablation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = ["arm", "options", "seeds", "validation error (%), mean ± sd", "test error (%), mean ± sd"]
    text = (
        f"# Recipe ablation: {MODEL} on RTS, 1,000 steps of 256 (quick budget)\n\nCommand: `{command}`\n\n"
        + format_markdown_table(summary_rows, header)
        + f"\n\n{verdict}\n\n## Runs\n\n"
        + format_markdown_table(run_rows, ["arm", "seed", "validation error (%)", "test error (%)", "time (min)"])
        + "\n"
    )
    write_text_atomic(args.out / "results.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(args.out / "ablation.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError) as err:  # unreadable runs: one line, not a traceback
        sys.exit(f"{Path(__file__).name}: error: {err}")
