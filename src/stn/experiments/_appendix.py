"""Pieces shared by the appendix experiments (addition, co-localisation, 3-D): their common command-line options
and a figure of labelled rows of images."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle
from torch import Tensor

from stn.engine.options import add_data_options, add_training_options, output_folder
from stn.viz import save_figure

__all__ = ["add_common_arguments", "image_rows"]

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixel edges


def add_common_arguments(
    parser: argparse.ArgumentParser,
    budgets: Mapping[str, Any],
    out: str,
    *,
    mnist: bool = True,
    runs: str | None = None,
) -> None:
    """``--budget``, ``--out``, ``--data-dir`` (where MNIST is; not with ``mnist=False``), ``--runs-dir`` (where the
    training engine's run folders are kept; only when ``runs`` is given) and the engine's recipe options (see
    :func:`stn.engine.options.add_training_options`)."""
    parser.add_argument("--budget", choices=sorted(budgets), default="quick", help="training length (default quick)")
    parser.add_argument("--out", type=output_folder, default=Path(out), help=f"output folder (default {out})")
    if runs is not None:
        parser.add_argument(
            "--runs-dir",
            type=output_folder,
            default=Path(runs),
            help=f"where the runs (checkpoints, metrics, curves) are kept and resumed from (default {runs})",
        )
    if mnist:
        add_data_options(parser, download=False)
    add_training_options(parser, budgets)


def image_rows(
    rows: Sequence[tuple[str, Tensor]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    boxes: dict[int, Sequence[Sequence[tuple[Box, str]]]] | None = None,
) -> Path:
    """A grid of grayscale images: one labelled row per ``(label, images (B, H, W))``, one column per image.

    Args:
        rows: the rows, top to bottom; every row must have the same number of images.
        path: the PNG to write (atomically).
        boxes: ``{row: per column, a list of ((x0, y0, x1, y1), colour)}`` rectangles drawn over that row.
    """
    if not rows:
        raise ValueError("image_rows needs at least one row")
    columns = len(rows[0][1])
    if any(len(images) != columns for _, images in rows):
        raise ValueError(f"every row needs the same number of images, got {[len(im) for _, im in rows]}")
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.2 * columns + 0.9, 1.25 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            image = images[c].detach().float().cpu()
            ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=max(1.0, image.max().item()))
            for (x0, y0, x1, y1), colour in (boxes or {}).get(r, [[]] * columns)[c]:
                # pixel edges -> imshow coordinates (pixel centres at integers)
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.2))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
