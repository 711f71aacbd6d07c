"""How fast is a fresh epoch of distorted MNIST? Ours (batched, ``stn.warp``) vs the per-image scipy way.

For RTS and TC this times generating a whole epoch (60,000 digits) with :class:`stn.data.DistortedMNIST`
against the common per-image loop of public reproductions: ``scipy.ndimage.affine_transform`` per digit (plus,
for TC, a Python loop pasting the six clutter crops). The scipy loop is timed on a subset (``--scipy-subset``,
default 2,000 digits) and **extrapolated** to the epoch; the table says so. It also times a few training steps of
the ST-CNN of Table 1 to put an epoch's generation cost beside an epoch's training cost.

Usage:
    python benchmarks/bench_data.py              # full size (60,000 digits per variant)
    python benchmarks/bench_data.py --smoke      # a tiny run, seconds
    python benchmarks/bench_data.py --data-dir ../shared/data --threads 1
    python benchmarks/bench_data.py --threads 1 --variants r,rts,p,e --models fcn,st-fcn-aff,st-fcn-tps,st-cnn-aff
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np
import torch
from scipy import ndimage

from stn.data import MNIST, DistortedMNIST, load_mnist, variant_info
from stn.models import create_model


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def scipy_rts(images: np.ndarray, rng: np.random.Generator, size: int = 42) -> np.ndarray:
    """The per-image way: one ``affine_transform`` per digit (rotation, scale and placement in one go)."""
    out = np.empty((len(images), size, size), dtype=np.float32)
    centre_in = np.array([13.5, 13.5])
    for i, image in enumerate(images.astype(np.float32) / 255):
        angle, scale = np.deg2rad(rng.uniform(-45, 45)), rng.uniform(0.7, 1.2)
        reach = 14 * scale * math.sqrt(2)  # keep the rotated frame (roughly) inside the canvas
        shift = rng.uniform(-max(size / 2 - reach, 0), max(size / 2 - reach, 0), size=2)
        c, s = math.cos(angle), math.sin(angle)
        inverse = np.array([[c, -s], [s, c]]) / scale  # output (row, col) -> input (row, col)
        centre_out = np.array([size / 2 - 0.5, size / 2 - 0.5]) + shift
        offset = centre_in - inverse @ centre_out
        out[i] = ndimage.affine_transform(image, inverse, offset, output_shape=(size, size), order=1)
    return out


def scipy_tc(images: np.ndarray, rng: np.random.Generator, size: int = 60, pieces: int = 6) -> np.ndarray:
    """The per-image way: ``affine_transform`` to place each digit, then a loop pasting six 6x6 crops."""
    out = np.empty((len(images), size, size), dtype=np.float32)
    floats = images.astype(np.float32) / 255
    for i, image in enumerate(floats):
        top_left = rng.integers(0, size - 28 + 1, size=2)
        canvas = ndimage.affine_transform(image, np.eye(2), -top_left, output_shape=(size, size), order=1)
        for _ in range(pieces):
            other = floats[rng.integers(len(floats))]
            y, x = rng.integers(0, 28 - 6 + 1, size=2)
            py, px = rng.integers(0, size - 6 + 1, size=2)
            np.maximum(
                canvas[py : py + 6, px : px + 6], other[y : y + 6, x : x + 6], out=canvas[py : py + 6, px : px + 6]
            )
        out[i] = canvas
    return out


def training_epoch_seconds(
    variant: str, num_images: int, batch_size: int = 256, steps: int = 5, model_name: str = "st-cnn-aff"
) -> float:
    """Seconds for one epoch of ``model_name``'s training (SGD), extrapolated from a few timed steps."""
    info = variant_info(variant)
    model = create_model(model_name, in_shape=(info.channels, *info.image_size), num_classes=info.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(batch_size, info.channels, *info.image_size)
    y = torch.randint(0, info.num_classes, (batch_size,))

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()  # warm-up
    seconds, _ = _timed(lambda: [step() for _ in range(steps)])
    return seconds / steps * math.ceil(num_images / batch_size)


def prefetch_gain(data: MNIST, variant: str, model_name: str, num: int, epochs: int, batch_size: int = 256) -> tuple:
    """Seconds for ``epochs`` epochs of ``model_name``'s SGD on ``variant``, each epoch generated in place and
    then trained on (``prefetch=False``, as before), against the next epoch generated in the background while this
    one trains (``DistortedMNIST.prefetch``, what the engine does): ``(without, with)``."""
    info = variant_info(variant)
    runs = []
    for prefetch in (False, True):
        torch.manual_seed(0)
        model = create_model(model_name, in_shape=(info.channels, *info.image_size), num_classes=info.num_classes)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        dataset = DistortedMNIST(variant, "train", mnist=data, num_samples=num if num != len(data) else None)
        start = time.perf_counter()
        for epoch in range(epochs):
            images, labels = dataset.epoch_tensors(epoch)
            if prefetch and epoch + 1 < epochs:
                dataset.prefetch(epoch + 1)
            for x, y in zip(images.split(batch_size), labels.split(batch_size)):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
        runs.append(time.perf_counter() - start)
    return tuple(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny run: 2,000 digits, scipy on 100")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: the usual search)")
    parser.add_argument("--num", type=int, default=60_000, help="digits per epoch (default 60,000)")
    parser.add_argument("--scipy-subset", type=int, default=2_000, help="digits the scipy loop is timed on")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs of each side; medians (default 5)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default torch's choice; 1 is faster on a machine shared by other jobs)",
    )
    parser.add_argument(
        "--models",
        default="st-cnn-aff",
        help="comma-separated Table 1 models whose training epoch is timed beside the generation (default "
        "st-cnn-aff; e.g. fcn,st-fcn-aff,st-fcn-tps: is an FCN run data-bound?)",
    )
    parser.add_argument("--variants", default="rts,tc", help="comma-separated variants (default rts,tc)")
    parser.add_argument(
        "--prefetch-epochs",
        type=int,
        default=3,
        help="epochs of each model trained with and without prefetching the next epoch (0: skip; default 3)",
    )
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    variants = [v.strip().lower() for v in args.variants.split(",") if v.strip()]
    per_image_loops = {"rts": scipy_rts, "tc": scipy_tc}
    if args.threads:
        torch.set_num_threads(args.threads)
    num, subset, repeats = (2_000, 100, 1) if args.smoke else (args.num, args.scipy_subset, args.repeats)

    mnist = load_mnist(args.data_dir, "train")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"data: {mnist}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {load}"
    )
    if len(mnist) < num:  # e.g. the 4,000-digit sample: cycle through it
        print(f"note: only {len(mnist)} digits available, an epoch of {num} cycles through them")
    data = MNIST(mnist.images, mnist.labels, mnist.source, mnist.root, "train")
    digits = mnist.images[:subset].numpy()

    rows = []
    for variant in variants:
        per_image = per_image_loops.get(variant)
        DistortedMNIST(variant, "train", mnist=data, num_samples=64).epoch_tensors()  # warm-up
        ours_runs, scipy_runs = [], []
        for _ in range(repeats):  # interleaved, so that a slow spell of a shared machine hits both sides
            dataset = DistortedMNIST(variant, "train", mnist=data, num_samples=num if num != len(mnist) else None)
            seconds, (images, _) = _timed(dataset.epoch_tensors)
            assert images.shape[0] == num
            del dataset, images
            ours_runs.append(seconds)
            if per_image is not None:
                seconds, _ = _timed(lambda fn=per_image: fn(digits, np.random.default_rng(0)))
                scipy_runs.append(seconds / subset * num)
        train = [training_epoch_seconds(variant, num, model_name=m) for m in models]
        scipy_epoch = statistics.median(scipy_runs) if scipy_runs else None
        rows.append((variant.upper(), statistics.median(ours_runs), scipy_epoch, train))

    print(
        f"\nGenerating one epoch of {num:,} distorted digits, median of {repeats} interleaved runs "
        f"(scipy loop timed on {subset:,} digits, extrapolated; RTS and TC only), beside one training epoch"
    )
    header = f"{'variant':<8}{'ours (s)':>10}{'per-image scipy (s)':>22}{'speed-up':>10}"
    header += "".join(f"{m + ' epoch (s)':>22}{'gen / (gen + train)':>21}" for m in models)
    print(header)
    print("-" * len(header))
    for variant, ours, scipy_epoch, train in rows:
        line = f"{variant:<8}{ours:>10.2f}"
        line += f"{'—':>22}{'—':>10}" if scipy_epoch is None else f"{scipy_epoch:>22.1f}{scipy_epoch / ours:>9.1f}x"
        line += "".join(f"{t:>22.1f}{ours / (ours + t):>20.1%}" for t in train)
        print(line)
    print(
        "\ntrain epoch: batch 256, SGD, extrapolated from 5 timed steps on random input. gen / (gen + train): the "
        "share of an epoch's time spent generating its data when the two run one after the other."
    )
    epochs = 2 if args.smoke else args.prefetch_epochs
    if epochs > 0:
        print(
            f"\n{epochs} epochs of training on real batches, each epoch generated before it is trained on, against "
            "the next epoch generated in a background thread meanwhile (DistortedMNIST.prefetch, the engine's way)"
        )
        print(f"{'variant':<8}{'model':<14}{'in place (s)':>14}{'prefetched (s)':>16}{'speed-up':>10}")
        for variant in variants:
            for model in models:
                without, ahead = prefetch_gain(data, variant, model, num, epochs)
                print(f"{variant.upper():<8}{model:<14}{without:>14.1f}{ahead:>16.1f}{without / ahead:>9.2f}x")
        print(f"(torch threads: {torch.get_num_threads()}; the background thread needs a core to spare to gain)")


if __name__ == "__main__":
    main()
