"""How much of the P test set is still a readable digit: the floor under every P cell of Table 1.

stn's P generator (``stn.data.distortions.projective``) follows the paper's description: scale about the centre
by U(0.75, 1), then move each of the image's four corners by N(0, 5 px). On a 28x28 image 5 px is a large
standard deviation: a corner moves more than 10 px in some image of almost every other draw, and a homography
that moves corners that far can put its horizon inside the output frame (part of the output then reads from
"behind the camera": zeros) or push much of the digit out of the frame. This study measures, on the fixed P test
set the reproductions score on:

* ``ink kept``: the share of the digit's ink (the sum of its pixels, rendered through the same warp onto a canvas
  three times wider) that lands inside the 28x28 frame;
* ``horizon``: whether the horizon line of the homography crosses the output frame;

and, for the shipped P models, their test error on the digits that keep most of their ink against the rest:
if the errors gather in the damaged digits, the P cells have a floor that no model reaches below.

Usage::

    python studies/p_floor.py --data-dir ../shared/data/mnist --out results/p-floor
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from stn.coords import base_grid
from stn.data import DistortedMNIST
from stn.io import write_report
from stn.models import create_model, list_pretrained
from stn.transforms import get as get_transform
from stn.viz import plot_image_rows

_CANVAS = 3  # the canvas the digit is rendered on, in frame widths
_THRESHOLDS = (0.5, 0.7, 0.8, 0.9)
_CLEAN = 0.9  # "keeps most of its ink": at least this share inside the frame, and no horizon in the frame


def ink_kept(images: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``images (N, 28, 28)`` and P's θ ``(N, 8)`` -> the share of each digit's ink inside the output frame ``(N,)``
    and whether the horizon crosses the frame ``(N,)`` (bool)."""
    n, side = len(images), images.shape[-1]
    h = get_transform("projective").matrix(theta.double())
    canvas = base_grid((_CANVAS * side, _CANVAS * side), dtype=torch.float64).reshape(-1, 2) * _CANVAS
    points = torch.einsum("bij,pj->bpi", h, torch.cat([canvas, torch.ones(len(canvas), 1, dtype=torch.float64)], 1))
    w = points[..., 2:]
    source = (points[..., :2] / w).masked_fill(w <= 0, 2.0)  # behind the camera: read outside the digit
    grid = source.view(n, _CANVAS * side, _CANVAS * side, 2).float()
    ink = F.grid_sample(images.unsqueeze(1), grid, align_corners=False)[:, 0]
    inner = ink[:, side : 2 * side, side : 2 * side].sum((1, 2))
    kept = inner / ink.sum((1, 2)).clamp_min(1e-6)
    corners = torch.tensor([[-1.0, -1, 1], [1, -1, 1], [-1, 1, 1], [1, 1, 1]], dtype=torch.float64)
    horizon = torch.einsum("bj,cj->bc", h[:, 2], corners).amin(1) <= 0
    return kept, horizon


@torch.no_grad()
def model_errors(name: str, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    model = create_model(name, pretrained=True).eval()
    wrong = [model(batch).argmax(1) != y for batch, y in zip(images.split(1000), labels.split(1000))]
    return torch.cat(wrong)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder with the MNIST files")
    parser.add_argument("--out", default="results/p-floor", help="output folder (default results/p-floor)")
    parser.add_argument("--num-test", type=int, default=None, help="score the first N test digits (smoke runs)")
    args = parser.parse_args(argv)
    test = DistortedMNIST("p", "test", root=args.data_dir, num_samples=args.num_test)
    images, labels = test.epoch_tensors()
    params = test.epoch_params()
    digits = test.mnist.images[params["index"]].float()
    kept, horizon = ink_kept(digits / 255 if digits.max() > 1 else digits, params["theta"])
    clean = (kept >= _CLEAN) & ~horizon
    rows = [[f"ink kept < {t:.0%}", f"{100 * (kept < t).float().mean():.2f}%"] for t in _THRESHOLDS]
    rows.append(["horizon crosses the frame", f"{100 * horizon.float().mean():.2f}%"])
    rows.append([f"clean (ink kept ≥ {_CLEAN:.0%}, no horizon)", f"{100 * clean.float().mean():.2f}%"])
    results: dict = {"num_test": len(labels), "clean_share": clean.float().mean().item(), "models": {}}
    model_rows = []
    for name in list_pretrained("*.p"):
        wrong = model_errors(name, images, labels)
        on_clean, on_rest = wrong[clean].float().mean().item(), wrong[~clean].float().mean().item()
        share = wrong[~clean].sum().item() / max(wrong.sum().item(), 1)
        results["models"][name] = {"error": wrong.float().mean().item(), "clean": on_clean, "rest": on_rest}
        model_rows.append(
            f"| {name} | {100 * wrong.float().mean():.2f} | {100 * on_clean:.2f} | {100 * on_rest:.2f} | "
            f"{100 * share:.0f}% |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    order = torch.argsort(kept)[:12]
    plot_image_rows(
        [(f"{kept[order[0]]:.0%}-{kept[order[-1]]:.0%} ink", images[order, 0])],
        out / "least_ink.png",
        title=f"The {len(order)} P test digits keeping the least of their ink in the frame",
    )
    table = "\n".join(f"| {a} | {b} |" for a, b in rows)
    command = "python studies/p_floor.py --data-dir ../shared/data/mnist --out results/p-floor"
    text = [
        "# The P test set: how much of it is still a readable digit\n",
        f"Command: `{command}`" + (f" (first {args.num_test} test digits)" if args.num_test else "") + "\n",
        f"{len(labels):,} P test digits (the fixed test set of `stn reproduce table1 --data P`).\n",
        "| measure | share of test digits |\n|---|---|\n" + table + "\n",
    ]
    if model_rows:
        text += [
            "Shipped P models, test error (%) on the clean digits and on the rest:\n",
            "| weights | all | clean | rest | share of its errors in the rest |\n|---|---|---|---|---|",
            "\n".join(model_rows) + "\n",
        ]
    text.append("![the digits keeping the least ink](least_ink.png)\n")
    write_report(out, "p_floor", "\n".join(text), results)
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
