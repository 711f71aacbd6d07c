"""Forward + backward time of ``stn.warp`` against the alternatives a user would otherwise pick.

* affine: raw ``F.affine_grid`` + ``F.grid_sample`` (target: stn.warp costs at most 1.10x),
* projective: kornia ``warp_perspective`` with the equivalent pixel-space matrix (target: no slower),
* TPS with 16 control points: kornia ``get_tps_transform`` + ``warp_image_tps`` (target: at least 15x faster).
  kornia's TPS puts its kernel centres at the source points, so it is a slightly different spline from the
  textbook one that ``stn`` computes (its outputs are not compared). ``warp_image_tps`` has no output size, so
  where the output is smaller than the input kornia's TPS is ``get_tps_transform`` + ``warp_points_tps`` on the
  output's pixel grid + ``grid_sample`` (what ``warp_image_tps`` does inside, at the output size).

Every call is timed as forward + backward to θ (and to the input with ``--input-grad``), all implementations
interleaved in one process, and the median of ``--repeats`` runs is reported.

Usage::

    python benchmarks/bench_warp.py              # the full table (sizes of the paper's experiments)
    python benchmarks/bench_warp.py --smoke      # tiny sizes, one run each (CI)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.geometry import create_meshgrid
from kornia.geometry.transform import get_tps_transform, warp_image_tps, warp_perspective, warp_points_tps

import stn
from stn import transforms

# (batch, channels, input H = W, output H = W)
FULL_SIZES = [(256, 1, 42, 42), (256, 1, 60, 30), (32, 3, 448, 224)]
SMOKE_SIZES = [(2, 1, 8, 8), (2, 3, 12, 6)]

# family -> (reference name, target, whether the ratio stn.warp time / reference time meets it)
TARGETS = {
    "affine": ("F.affine_grid+grid_sample", "<= 1.10x raw", lambda r: r <= 1.10),
    "projective": ("kornia warp_perspective", "<= 1.00x kornia", lambda r: r <= 1.00),
    "tps": ("kornia TPS", "<= 0.067x (15x faster)", lambda r: r <= 1 / 15),
}

Warp = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Case:
    family: str
    batch: int
    channels: int
    in_size: int
    out_size: int
    ours: Warp
    reference: Warp
    theta: torch.Tensor
    reference_param: torch.Tensor

    @property
    def same_output(self) -> bool:
        """Whether the reference computes the same warp (kornia's TPS is a different spline, see the docstring)."""
        return self.family != "tps"


def pixel_to_normalized(size: int) -> torch.Tensor:
    """Homogeneous map of pixel (x, y) to normalised coordinates on a square image of ``size`` pixels."""
    return torch.tensor([[2 / size, 0, 1 / size - 1], [0, 2 / size, 1 / size - 1], [0, 0, 1]], dtype=torch.float64)


def kornia_homography(theta: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """kornia's source -> destination pixel matrix for our normalised target -> source θ (projective)."""
    h = transforms.get("projective").matrix(theta.double())
    target_to_source = torch.linalg.inv(pixel_to_normalized(in_size)) @ h @ pixel_to_normalized(out_size)
    return torch.linalg.inv(target_to_source).float()


def make_cases(batch: int, channels: int, in_size: int, out_size: int) -> list[Case]:
    out = (out_size, out_size)
    cases = []
    for family in TARGETS:
        t = transforms.get(family)
        theta = t.identity(batch) + 0.05 * torch.randn(batch, t.num_params)

        def ours(x: torch.Tensor, th: torch.Tensor, family: str = family) -> torch.Tensor:
            return stn.warp(x, th, family, out)

        if family == "affine":
            param = theta

            def reference(x: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
                grid = F.affine_grid(th.view(-1, 2, 3), [x.shape[0], x.shape[1], *out], align_corners=False)
                return F.grid_sample(x, grid, align_corners=False)

        elif family == "projective":
            param = kornia_homography(theta, in_size, out_size)

            def reference(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
                return warp_perspective(x, m, out, align_corners=False)

        else:
            param = theta
            control = t.control_points.float().expand(batch, -1, -1)
            grid = create_meshgrid(out_size, out_size, align_corners=False).reshape(1, -1, 2)

            def reference(
                x: torch.Tensor, th: torch.Tensor, control: torch.Tensor = control, grid: torch.Tensor = grid
            ) -> torch.Tensor:
                source = th.view(th.shape[0], -1, 2)
                kernel_weights, affine_weights = get_tps_transform(control, source)
                if x.shape[-1] == out_size:
                    return warp_image_tps(x, source, kernel_weights, affine_weights)
                points = warp_points_tps(grid.expand(x.shape[0], -1, -1), source, kernel_weights, affine_weights)
                return F.grid_sample(x, points.view(x.shape[0], out_size, out_size, 2), align_corners=False)

        cases.append(Case(family, batch, channels, in_size, out_size, ours, reference, theta, param))
    return cases


def time_call(func: Warp, x: torch.Tensor, param: torch.Tensor) -> float:
    """Seconds for one forward + backward of ``func``."""
    x = x.detach().requires_grad_(x.requires_grad)
    param = param.detach().requires_grad_()
    start = time.perf_counter()
    func(x, param).sum().backward()
    return time.perf_counter() - start


def run_case(case: Case, repeats: int, warmup: int, input_grad: bool) -> tuple[float, float]:
    """Median seconds of (stn.warp, reference), the two interleaved."""
    x = torch.rand(case.batch, case.channels, case.in_size, case.in_size).requires_grad_(input_grad)
    if case.same_output:  # make sure both sides do the same work
        torch.testing.assert_close(
            case.ours(x, case.theta), case.reference(x, case.reference_param), rtol=0, atol=1e-3
        )  # float32 rounding of different formulas
    ours, reference = [], []
    for i in range(warmup + repeats):
        a = time_call(case.ours, x, case.theta)
        b = time_call(case.reference, x, case.reference_param)
        if i >= warmup:
            ours.append(a)
            reference.append(b)
    return statistics.median(ours), statistics.median(reference)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run each, no warm-up (for CI)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per implementation (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--input-grad", action="store_true", help="also back-propagate to the input image")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    sizes, repeats, warmup = (SMOKE_SIZES, 1, 0) if args.smoke else (FULL_SIZES, args.repeats, args.warmup)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {repeats}, "
        f"forward+backward to θ{' and the input' if args.input_grad else ''}, "
        f"load average at start {os.getloadavg()[0]:.1f} (timings need a quiet machine)"
    )
    header = (
        f"{'size':<20} {'family':<11} {'stn.warp ms':>11} {'reference':<26} {'ref ms':>9} {'ratio':>7} "
        f"{'speed-up':>8}  target"
    )
    print(header)
    print("-" * len(header))
    all_met = True
    for batch, channels, in_size, out_size in sizes:
        for case in make_cases(batch, channels, in_size, out_size):
            ours, reference = run_case(case, repeats, warmup, args.input_grad)
            ratio = ours / reference
            name, target, met = TARGETS[case.family]
            all_met &= met(ratio)
            size = f"{batch}x{channels}x{in_size}²->{out_size}²"
            print(
                f"{size:<20} {case.family:<11} {ours * 1e3:>11.2f} {name:<26} {reference * 1e3:>9.2f} "
                f"{ratio:>6.3f}x {1 / ratio:>7.1f}x  {target} {'ok' if met(ratio) else 'MISSED'}"
            )
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if args.smoke:
        print("smoke run: sizes too small and single runs, the ratios mean nothing")
    else:
        print("all targets met" if all_met else "some targets missed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
