"""Does θ follow the digit? Per-digit analysis of a finished ST-FCN / ST-CNN run on distorted MNIST (RTS).

On the run's own validation digits (the last ``validation`` MNIST training digits its ``config.json`` records,
10,000 by default, with the fixed distortions of ``TEST_SEED`` that training validated on), it reports, as one
JSON line per run:

* ``val_error_recomputed``: the checkpoint's validation error (%), a sanity check against ``summary.json``;
* translation: R² of the grid centre (θ's translation) against the true ink-box centre, per axis
  (``translation_r2_x`` / ``_y``), and the mean distance in pixels between them (``centre_dist_px``) beside that
  of the best constant centre (``centre_dist_const_px``);
* scale: per-digit sqrt|det A|, its mean and std, and its Pearson r with the ink box's longer side
  (``scale_vs_side_r``);
* ink kept: the share of the digit's ink that lands inside the transformer's output (1 = nothing cut off);
* ``loc_layers``: per hidden (ReLU) layer of the localisation net, units never active on any digit (``dead``),
  units active on every digit (``always_on``) and the participation ratio of the features (their effective
  number of directions).

Usage (seconds per run; ``--out`` also writes the printed lines to a file)::

    OMP_NUM_THREADS=1 python studies/theta_tracking.py results/stfcn-sweep/base/rts/st-fcn-aff/seed0 \\
        --data-dir ../shared/data/mnist --out results/stfcn-sweep/base.analysis.json

``--num-val N`` analyses N of the validation digits instead of all of them (smoke runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from stn.data.datasets import DistortedMNIST
from stn.data.specs import TEST_SEED
from stn.engine.checkpoint import load_model
from stn.io import write_text_atomic

BATCH = 1000
DEFAULT_VALIDATION = 10_000  # the CLI's default hold-out; used when a run's config does not record one


def r2(pred: torch.Tensor, true: torch.Tensor) -> float:
    """R² of the best linear fit ``true ~ a * pred + b``: the share of the true variance that ``pred`` tracks."""
    x = torch.stack([pred, torch.ones_like(pred)], 1)
    coef = torch.linalg.lstsq(x, true[:, None]).solution
    res = true - (x @ coef)[:, 0]
    return float(1 - res.var() / true.var())


def layer_health(features: torch.Tensor) -> dict[str, int | float]:
    """Dead / always-on units and participation ratio of one hidden layer's activations ``(N, ...)``."""
    f = features.flatten(1).double()
    active = (f > 0).float().mean(0)
    ev = torch.linalg.eigvalsh(torch.cov(f.T)).clamp(min=0)
    pr = float(ev.sum() ** 2 / (ev**2).sum()) if ev.sum() > 0 else 0.0
    return {
        "units": f.shape[1],
        "dead": int((active == 0).sum()),
        "always_on": int((active == 1).sum()),
        "participation_ratio": round(pr, 2),
    }


@torch.no_grad()
def analyse(run: Path, root: str, num_val: int | None = None) -> dict[str, Any]:
    """The analysis of one run folder (see the module docstring) on its validation digits, or ``num_val`` of them."""
    model, _ = load_model(run)
    data = json.loads((run / "config.json").read_text())["data"]
    validation = data.get("validation") or DEFAULT_VALIDATION
    # val digits carry fixed distortions (TEST_SEED), the same ones the trainer validated on
    ds = DistortedMNIST(data["variant"], "val", root=root, seed=TEST_SEED, validation=validation, num_samples=num_val)
    x, y = ds.epoch_tensors()
    box = ds.epoch_params()["box"].double()  # (N, 4) x0 y0 x1 y1 in output pixels
    size = x.shape[-1]
    centre = torch.stack([(box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2], 1) / size * 2 - 1
    side = torch.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])

    st = model.transformer
    captured: list[torch.Tensor] = []
    relus = [m for m in st.localization.modules() if isinstance(m, torch.nn.ReLU)]
    hooks = [m.register_forward_hook(lambda _m, _i, o: captured.append(o.detach().clone())) for m in relus]
    logits, thetas, outs = [], [], []
    try:
        for i in range(0, len(x), BATCH):
            out, theta = st(x[i : i + BATCH], return_theta=True)
            thetas.append(theta)
            outs.append(out)
            logits.append(model.classifier(model.pool(out)))
    finally:
        for h in hooks:
            h.remove()
    theta = torch.cat(thetas).double()
    out = torch.cat(outs).double()
    err = float((torch.cat(logits).argmax(1) != y).float().mean())
    a = theta[:, [0, 1, 3, 4]].view(-1, 2, 2)
    t = theta[:, [2, 5]]
    scale = a.det().abs().sqrt()
    # each output pixel covers scale² of an input pixel, so the output's ink times scale² is the input ink it shows
    kept = (out.flatten(1).sum(1) * scale**2) / x.double().flatten(1).sum(1)
    px = size / 2
    dist = ((t - centre).norm(dim=1) * px).mean()
    const = ((centre - centre.mean(0)).norm(dim=1) * px).mean()
    # the hooks fired once per ReLU call per batch, in order: regroup them by call (a reused ReLU counts per call)
    calls = len(captured) // len(logits)
    layers = [torch.cat(captured[k::calls]) for k in range(calls)]
    return {
        "run": str(run),
        "val_error_recomputed": round(100 * err, 2),
        "translation_r2_x": round(r2(t[:, 0], centre[:, 0]), 3),
        "translation_r2_y": round(r2(t[:, 1], centre[:, 1]), 3),
        "centre_dist_px": round(float(dist), 2),
        "centre_dist_const_px": round(float(const), 2),
        "scale_mean": round(float(scale.mean()), 3),
        "scale_std": round(float(scale.std()), 3),
        "scale_vs_side_r": round(float(torch.corrcoef(torch.stack([scale, side]))[0, 1]), 3),
        "ink_kept_mean": round(float(kept.mean()), 3),
        "ink_kept_lt_0.95": round(float((kept < 0.95).double().mean()), 3),
        "loc_layers": [layer_health(f) for f in layers],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (holding checkpoint.pt and config.json)")
    parser.add_argument("--data-dir", required=True, help="folder with the MNIST files")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON lines to this file")
    parser.add_argument("--num-val", type=int, default=None, help="analyse N of the validation digits (smoke runs)")
    args = parser.parse_args(argv)
    if args.num_val is not None and args.num_val < 2:
        parser.error(f"--num-val must be >= 2 (R² and correlations need two digits), got {args.num_val}")
    lines = []
    for run in args.runs:
        lines.append(json.dumps(analyse(run, args.data_dir, args.num_val)))
        print(lines[-1], flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError, KeyError) as err:  # a missing run or data folder: one line, not a traceback
        sys.exit(f"{Path(__file__).name}: error: {err}")
