"""Forward + backward time of ``stn.warp`` against the alternatives a user would otherwise pick.

* affine: raw ``F.affine_grid`` + ``F.grid_sample`` (target: stn.warp costs at most 1.10x),
* projective: kornia ``warp_perspective`` with the equivalent pixel-space matrix (target: no slower),
* TPS with 16 control points: kornia ``get_tps_transform`` + ``warp_image_tps`` (target: at least 15x faster).
  kornia's TPS puts its kernel centres at the source points, so it is a slightly different spline from the
  textbook one that ``stn`` computes (its outputs are not compared). ``warp_image_tps`` has no output size, so
  where the output is smaller than the input kornia's TPS is ``get_tps_transform`` + ``warp_points_tps`` on the
  output's pixel grid + ``grid_sample`` (what ``warp_image_tps`` does inside, at the output size).

Then, each beside its alternative where one exists (ratio = ours / alternative):

* ``antialias=True`` overhead: ``stn.warp(..., antialias=True)`` against the plain ``stn.warp`` of the same θ
  (where some samples shrink: the cost of supersampling them), and on a pure 2x downscaling against
  ``F.interpolate(..., mode="bilinear", antialias=True)``, which computes the same output there;
* the warp algebra: ``stn.transform_points`` against kornia's ``transform_points`` with the pixel matrix that
  ``stn.pixel_matrix_from_theta`` gives (the same points; ours converts pixels to normalised coordinates and back,
  in float64), the TPS directions (``inverse=True`` evaluates the spline, beside kornia's ``get_tps_transform`` +
  ``warp_points_tps`` with its kernels on the control points, the same spline; the forward direction is a Newton
  solve, with no alternative), and ``stn.compose`` against the product of the homogeneous matrices by hand.

Every call is timed as forward + backward to θ (and to the input with ``--input-grad``; the algebra: to θ and the
points), all implementations interleaved in one process, and the median of ``--repeats`` runs is reported.

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
from functools import partial

import torch
import torch.nn.functional as F
from kornia.geometry import create_meshgrid
from kornia.geometry.linalg import transform_points as kornia_transform_points
from kornia.geometry.transform import get_tps_transform, warp_image_tps, warp_perspective, warp_points_tps

import stn
from stn import transforms
from stn.antialias import supersampling_factors

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


def time_call(func: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> float:
    """Seconds for one forward + backward of ``func`` to those of its ``inputs`` that require a gradient."""
    leaves = [t.detach().requires_grad_(t.requires_grad) for t in inputs]
    start = time.perf_counter()
    func(*leaves).sum().backward()
    return time.perf_counter() - start


def interleaved(funcs: list[Callable[..., torch.Tensor]], inputs: list[tuple], repeats: int, warmup: int) -> list:
    """Median seconds of each ``funcs[i](*inputs[i])`` (forward + backward), the calls interleaved."""
    times: list[list[float]] = [[] for _ in funcs]
    for i in range(warmup + repeats):
        for func, args, record in zip(funcs, inputs, times):
            elapsed = time_call(func, *args)
            if i >= warmup:
                record.append(elapsed)
    return [statistics.median(record) for record in times]


def run_case(case: Case, repeats: int, warmup: int, input_grad: bool) -> tuple[float, float]:
    """Median seconds of (stn.warp, reference), the two interleaved."""
    x = torch.rand(case.batch, case.channels, case.in_size, case.in_size).requires_grad_(input_grad)
    if case.same_output:  # make sure both sides do the same work
        torch.testing.assert_close(
            case.ours(x, case.theta), case.reference(x, case.reference_param), rtol=0, atol=1e-3
        )  # float32 rounding of different formulas
    theta, param = case.theta.detach().requires_grad_(), case.reference_param.detach().requires_grad_()
    ours, reference = interleaved([case.ours, case.reference], [(x, theta), (x, param)], repeats, warmup)
    return ours, reference


@dataclass
class Pair:
    """One line of the antialias and algebra tables: our call beside its alternative (None where there is none)."""

    label: str
    ours: Callable[..., torch.Tensor]
    inputs: tuple
    reference_name: str = "—"
    reference: Callable[..., torch.Tensor] | None = None
    reference_inputs: tuple = ()
    same_output: bool = False
    note: str = ""


def antialias_pairs(batch: int, channels: int, in_size: int, out_size: int, input_grad: bool) -> list[Pair]:
    """``antialias=True`` against plain ``stn.warp`` (random θ as in the warp table, and a 1.5x attention window),
    and a pure downscaling against ``F.interpolate(antialias=True)`` (backward to the input: it has no θ)."""
    out = (out_size, out_size)
    x = torch.rand(batch, channels, in_size, in_size).requires_grad_(input_grad)
    size = f"{batch}x{channels}x{in_size}²->{out_size}²"
    pairs = []
    thetas: dict[str, torch.Tensor] = {}
    for family in TARGETS:
        t = transforms.get(family)
        thetas[family] = t.identity(batch) + 0.05 * torch.randn(batch, t.num_params)
    if out_size < in_size:
        thetas["attention s=0.75"] = torch.tensor([[0.75, 0.0, 0.0]]).repeat(batch, 1)
    for name, theta in thetas.items():
        family = name.split()[0]
        factors = supersampling_factors(theta, family, (in_size, in_size), out)
        shrinking = (factors > 1).any(1).float().mean()
        note = f"{shrinking:.0%} of samples shrink, k <= {int(factors.amax())}"

        def warp(x: torch.Tensor, th: torch.Tensor, family: str = family, antialias: bool = True) -> torch.Tensor:
            return stn.warp(x, th, family, out, antialias=antialias)

        plain = partial(warp, antialias=False)
        theta.requires_grad_()
        pairs.append(Pair(f"{size} {name}", warp, (x, theta), "stn.warp (plain)", plain, (x, theta), note=note))
    if in_size % out_size == 0 and out_size < in_size:
        whole = transforms.get("attention").identity(batch)

        def resize(x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, size=out, mode="bilinear", antialias=True, align_corners=False)

        scaling = partial(stn.warp, theta=whole, transform="attention", out_size=out, antialias=True)
        x = x.detach().requires_grad_()
        label = f"{size} scale 1/{in_size // out_size}"
        pairs.append(Pair(label, scaling, (x,), "F.interpolate antialias", resize, (x,), same_output=True))
    return pairs


def algebra_pairs(batch: int, points: int) -> list[Pair]:
    """``stn.transform_points`` and ``stn.compose`` beside kornia's / hand-written equivalents."""
    in_size, out_size = (64, 80), (48, 96)
    keypoints = (torch.rand(batch, points, 2) * torch.tensor([80.0, 64.0]) - 0.5).requires_grad_()
    pairs = []
    for family in ("affine", "projective"):
        t = transforms.get(family)
        theta = (t.identity(batch) + 0.05 * torch.randn(batch, t.num_params)).requires_grad_()
        matrix = stn.pixel_matrix_from_theta(theta.detach(), family, in_size, out_size)
        if family == "affine":  # kornia takes the homogeneous 3x3 matrix
            matrix = torch.cat([matrix, torch.tensor([0.0, 0.0, 1.0]).expand(batch, 1, 3)], dim=1)
        ours = partial(stn.transform_points, transform=family, in_size=in_size, out_size=out_size)
        pairs.append(
            Pair(
                f"transform_points {family}",
                ours,
                (keypoints, theta),
                "kornia transform_points",
                kornia_transform_points,
                (matrix.requires_grad_(), keypoints),
                same_output=True,
            )
        )
        other = (t.identity(batch) + 0.05 * torch.randn(batch, t.num_params)).requires_grad_()
        pairs.append(
            Pair(
                f"compose {family}",
                partial(stn.compose, transform=family),
                (theta, other),
                "matrix product by hand",
                partial(compose_by_hand, projective=family == "projective"),
                (theta, other),
                same_output=True,
            )
        )
    tps = transforms.get("tps")
    theta = (tps.identity(batch) + 0.05 * torch.randn(batch, tps.num_params)).requires_grad_()
    control = tps.control_points.float().expand(batch, -1, -1)
    pixels_in, pixels_out = torch.tensor(in_size[::-1]), torch.tensor(out_size[::-1])  # (W, H), points are (x, y)

    def kornia_tps_points(p: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
        """The same spline (kernels centred on the control points), output pixels -> input pixels."""
        kernel_weights, affine_weights = get_tps_transform(control, th.view(batch, -1, 2))
        normalized = warp_points_tps((2 * p + 1) / pixels_out - 1, control, kernel_weights, affine_weights)
        return ((normalized + 1) * pixels_in - 1) / 2

    inverse = partial(stn.transform_points, transform=tps, in_size=in_size, out_size=out_size, inverse=True)
    pairs.append(
        Pair(
            "transform_points tps inverse",
            inverse,
            (keypoints, theta),
            "kornia warp_points_tps",
            kornia_tps_points,
            (keypoints, theta),
            same_output=True,
        )
    )
    forward = partial(stn.transform_points, transform=tps, in_size=in_size, out_size=out_size)
    pairs.append(Pair("transform_points tps", forward, (keypoints, theta), note="Newton solve"))
    return pairs


def compose_by_hand(a: torch.Tensor, b: torch.Tensor, projective: bool) -> torch.Tensor:
    """θ of ``T_a ∘ T_b`` as a user would write it: homogeneous 3x3 matrices, one product (float32, no checks)."""
    last = torch.ones(a.shape[0], 1) if projective else torch.tensor([0.0, 0.0, 1.0]).expand(a.shape[0], 3)
    product = torch.cat([a, last], dim=1).view(-1, 3, 3) @ torch.cat([b, last], dim=1).view(-1, 3, 3)
    return (product / product[:, 2:, 2:]).flatten(1)[:, :8] if projective else product[:, :2].flatten(1)


def print_pairs(title: str, unit: str, pairs: list[Pair], repeats: int, warmup: int) -> None:
    print(f"\n{title}")
    header = f"{'case':<44} {'ours ' + unit:>10} {'alternative':<26} {'alt ' + unit:>9} {'ratio':>7}  note"
    print(header)
    print("-" * len(header))
    scale = 1e3 if unit == "ms" else 1e6
    for pair in pairs:
        if pair.same_output and pair.reference is not None:  # both sides compute the same numbers
            ours = pair.ours(*pair.inputs).detach()
            torch.testing.assert_close(
                ours, pair.reference(*pair.reference_inputs).detach().view_as(ours), atol=1e-3, rtol=1e-4
            )
        if pair.reference is None:
            (ours,) = interleaved([pair.ours], [pair.inputs], repeats, warmup)
            print(f"{pair.label:<44} {ours * scale:>10.2f} {pair.reference_name:<26} {'—':>9} {'—':>7}  {pair.note}")
            continue
        ours, reference = interleaved(
            [pair.ours, pair.reference], [pair.inputs, pair.reference_inputs], repeats, warmup
        )
        print(
            f"{pair.label:<44} {ours * scale:>10.2f} {pair.reference_name:<26} {reference * scale:>9.2f} "
            f"{ours / reference:>6.3f}x  {pair.note}"
        )


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
    pairs = [pair for size in sizes for pair in antialias_pairs(*size, args.input_grad)]
    print_pairs("antialias=True: overhead over plain sampling, and a pure downscaling", "ms", pairs, repeats, warmup)
    batch, points = (2, 5) if args.smoke else (256, 68)
    title = f"warp algebra: {batch} samples x {points} points, forward + backward to θ and the points"
    print_pairs(title, "µs", algebra_pairs(batch, points), repeats, warmup)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if args.smoke:
        print("smoke run: sizes too small and single runs, the ratios mean nothing")
    else:
        print("all targets met" if all_met else "some targets missed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
