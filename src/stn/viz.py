"""Figures: what the transformers do (the paper's Table 1, right), training curves with θ diagnostics, and an
animation of the transformations over training. PNG / GIF, drawn with matplotlib's Agg backend.

Example:
    >>> import torch
    >>> from stn.models import create_model
    >>> from stn.viz import plot_curves, plot_model_transformations
    >>> # a trained model and its history: model, checkpoint = stn.engine.checkpoint.load_model("run/checkpoint.pt")
    >>> model = create_model("st-cnn-aff", in_shape=(1, 42, 42))
    >>> plot_model_transformations(model, torch.rand(4, 1, 42, 42), "fig.png")
    PosixPath('fig.png')
    >>> history = [
    ...     {"epoch": e, "train_loss": 1 / e, "test_loss": 1 / e, "train_error": 0.1 / e, "test_error": 0.1 / e}
    ...     for e in (1, 2, 3)
    ... ]
    >>> plot_curves(history, "curves.png")  # checkpoint["history"] of a run
    PosixPath('curves.png')
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from torch import Tensor, nn

from stn._logticks import few_log_ticks
from stn.coords import normalized_to_pixel
from stn.io import atomic_path
from stn.modules.diagnostics import apply_transformer, capture_transformers, transformer_modules

__all__ = [
    "plot_against_paper",
    "plot_attention_windows",
    "plot_curves",
    "plot_image_rows",
    "plot_model_transformations",
    "plot_transformations",
    "save_figure",
    "save_gif",
    "training_gif",
]

_GRID_LINES = 7  # lines of the sampling grid drawn in each direction
_MAX_COLUMNS = 10
_GRID_MARGIN = 0.15  # room around the input in the grid panel, as a fraction of its size
Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixel edges


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _display(image: Tensor) -> tuple[np.ndarray, str | None]:
    """``(C, H, W)`` -> an array for ``imshow`` and its colour map: RGB for 3 channels, else the channel max."""
    image = image.detach().float().cpu()
    lo, hi = image.min().item(), image.max().item()
    if lo < 0 or hi > 1:  # e.g. mean-normalised inputs: stretch to [0, 1]
        image = (image - lo) / max(hi - lo, 1e-8)
    if image.shape[0] == 3:
        return image.permute(1, 2, 0).numpy(), None
    return image.amax(0).numpy(), "gray"


def _draw_grid(ax: plt.Axes, grid: Tensor, in_size: Sequence[int]) -> None:
    """Draw the sampling grid ``(h, w, 2)`` (normalised source coordinates) over an input of ``in_size``."""
    height, width = in_size
    x = normalized_to_pixel(grid[..., 0].detach().float().cpu(), width).numpy()
    y = normalized_to_pixel(grid[..., 1].detach().float().cpu(), height).numpy()
    rows = np.unique(np.linspace(0, x.shape[0] - 1, _GRID_LINES).round().astype(int))
    cols = np.unique(np.linspace(0, x.shape[1] - 1, _GRID_LINES).round().astype(int))
    for r in rows:
        ax.plot(x[r], y[r], color="tab:orange", lw=0.6, alpha=0.8)
    for c in cols:
        ax.plot(x[:, c], y[:, c], color="tab:orange", lw=0.6, alpha=0.8)
    border = np.concatenate(
        [
            np.stack([x[0], y[0]], 1),
            np.stack([x[:, -1], y[:, -1]], 1),
            np.stack([x[-1, ::-1], y[-1, ::-1]], 1),
            np.stack([x[::-1, 0], y[::-1, 0]], 1),
        ]
    )
    ax.plot(border[:, 0], border[:, 1], color="tab:red", lw=1.2)


def _panel_labels(n: int, steps: bool) -> list[str]:
    if steps:
        return [s for k in range(1, n + 1) for s in (f"step {k}: T_θ{k}(G)", "output" if k == n else f"view {k}")]
    if n == 1:
        return ["T_θ(G) on input", "output"]
    return [s for k in range(1, n + 1) for s in (f"T_θ{k}(G)", f"output {k}")]


def _transformations_figure(
    inputs: Tensor, grids: Tensor, outputs: Tensor, title: str | None = None, steps: bool = False
) -> plt.Figure:
    b = min(len(inputs), _MAX_COLUMNS)
    n = grids.shape[1]
    labels = ["input", *_panel_labels(n, steps)]
    fig, axes = plt.subplots(len(labels), b, figsize=(1.3 * b + 0.8, 1.35 * len(labels)), squeeze=False)
    in_size = inputs.shape[-2:]
    for j in range(b):
        shown, cmap = _display(inputs[j])
        axes[0, j].imshow(shown, cmap=cmap, vmin=0, vmax=1)
        for k in range(n):
            grid_ax, out_ax = axes[1 + 2 * k, j], axes[2 + 2 * k, j]
            grid_ax.imshow(shown, cmap=cmap, vmin=0, vmax=1)
            _draw_grid(grid_ax, grids[j, k], in_size)
            margin = _GRID_MARGIN * max(in_size)  # a grid reaching outside the input stays visible
            grid_ax.set_xlim(-0.5 - margin, in_size[1] - 0.5 + margin)
            grid_ax.set_ylim(in_size[0] - 0.5 + margin, -0.5 - margin)
            out, out_cmap = _display(outputs[j, k])
            out_ax.imshow(out, cmap=out_cmap, vmin=0, vmax=1)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for label, ax in zip(labels, axes[:, 0]):
        ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_transformations(
    inputs: Tensor,
    grids: Tensor,
    outputs: Tensor,
    path: str | os.PathLike,
    title: str | None = None,
    *,
    steps: bool = False,
) -> Path:
    """The paper's Table 1 (right) figure: for each image (columns, at most 10), the input, the sampling grid
    T_θ(G) drawn on the input (red: its border), and the transformer's output.

    Args:
        inputs: ``(B, C, H, W)``.
        grids: ``(B, N, h, w, 2)`` for N transformers (``(B, h, w, 2)`` is read as N = 1).
        outputs: ``(B, N, C, h, w)`` (``(B, C, h, w)`` for N = 1).
        path: the PNG to write.
        title: the figure's title.
        steps: the N panels are the steps of one :class:`stn.CompositionalSpatialTransformer` (labelled step k,
            the last one its output), not N parallel transformers.
    """
    if grids.dim() == 4:
        grids, outputs = grids.unsqueeze(1), outputs.unsqueeze(1)
    if grids.dim() != 5 or outputs.dim() != 5 or not len(inputs) == len(grids) == len(outputs):
        raise ValueError(
            f"expected inputs (B, C, H, W), grids (B, N, h, w, 2), outputs (B, N, C, h, w); got "
            f"{tuple(inputs.shape)}, {tuple(grids.shape)}, {tuple(outputs.shape)}"
        )
    return save_figure(_transformations_figure(inputs, grids, outputs, title, steps), path)


def plot_model_transformations(
    model: nn.Module, images: Tensor, path: str | os.PathLike, title: str | None = None
) -> Path:
    """:func:`plot_transformations` for the first spatial transformer of ``model`` on ``images (B, C, H, W)``;
    for a :class:`stn.CompositionalSpatialTransformer`, one grid and view per step.

    Raises:
        ValueError: ``model`` has no spatial transformer.
    """
    captures = capture_transformers(model, images)
    if not captures:
        raise ValueError(f"{type(model).__name__} has no spatial transformer to visualise")
    capture = next(iter(captures.values()))
    return plot_transformations(capture.inputs, capture.grid, capture.outputs, path, title, steps=capture.steps)


def plot_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike, title: str | None = None) -> Path:
    """One panel per metric of the task (``loss`` first, then e.g. ``error``), each with the training, validation
    and test curves the records hold (keys ``train_<metric>``, ``val_<metric>``, ``test_<metric>``), plus the θ
    diagnostics (scale, outside fraction, folds) when the records have them (keys ``"<transformer>.scale_mean"`` etc.,
    see :mod:`stn.modules.diagnostics`). ``error`` is drawn in % on a log scale."""
    if not history:
        raise ValueError("history is empty: nothing to plot")
    epochs = [r["epoch"] for r in history]
    last = history[-1]
    metrics = sorted({k.split("_", 1)[1] for k in last if k.startswith("test_")}, key=lambda m: (m != "loss", m))
    names = sorted({k.rsplit(".", 1)[0] for k in last if k.endswith(".scale_mean")})
    panels = len(metrics) + (2 if names else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.2), squeeze=False)
    axes = axes[0]
    for ax, metric in zip(axes, metrics):
        percent = metric == "error"
        for split, style in (("train", "--"), ("val", ":"), ("test", "-")):
            values = [r.get(f"{split}_{metric}") for r in history]
            if all(v is not None for v in values):
                ax.plot(epochs, [100 * v if percent else v for v in values], style, label=split)
        ax.set(title="error (%)" if percent else metric, xlabel="epoch")
        if percent:
            ax.set_yscale("log")
            few_log_ticks(ax.yaxis)
    if names:
        scale_ax, grid_ax = axes[len(metrics) :]
        for name in names:
            mean = np.array([r[f"{name}.scale_mean"] for r in history])
            std = np.array([r[f"{name}.scale_std"] for r in history])
            scale_ax.plot(epochs, mean, label=name)
            scale_ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
            grid_ax.plot(epochs, [100 * r[f"{name}.outside_frac"] for r in history], label=f"{name}: outside input")
            grid_ax.plot(epochs, [100 * r[f"{name}.fold_frac"] for r in history], ":", label=f"{name}: folded")
        scale_ax.axhline(1.0, color="gray", lw=0.5)
        scale_ax.set(title="θ scale (1 = identity, <1 zoom in)", xlabel="epoch")
        grid_ax.set(title="sampling grid (%)", xlabel="epoch")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_against_paper(cells: Sequence[dict[str, Any]], path: str | os.PathLike, title: str | None = None) -> Path:
    """Our error against the paper's, one row per cell, on a log scale: the paper's as an open diamond, ours as a
    dot with its standard deviation over seeds as a bar, joined by a line, and ours / paper written at the right.

    Args:
        cells: top to bottom, each ``{"label": str, "paper": float, "ours": float, "sd": float | None}``
            (errors in %; ``sd`` None or 0 for one seed), optionally ``"group"``: a line separates the cells of
            consecutive groups.
        path: the PNG to write (atomically).
    """
    if not cells:
        raise ValueError("no cells to plot")
    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.32 * len(cells)))
    rows = np.arange(len(cells))[::-1]  # the first cell on top
    paper = np.array([c["paper"] for c in cells], dtype=float)
    ours = np.array([c["ours"] for c in cells], dtype=float)
    sd = np.array([c.get("sd") or 0.0 for c in cells], dtype=float)
    ax.hlines(rows, np.minimum(paper, ours), np.maximum(paper, ours), color="0.75", lw=1.5, zorder=1)
    ax.plot(paper, rows, "D", mfc="white", mec="black", ms=6, label="paper", zorder=3)
    # a bar that would reach below zero is clipped at a tenth of the mean (a log axis has no zero)
    low = np.minimum(sd, 0.9 * ours)
    ax.errorbar(
        ours, rows, xerr=[low, sd], fmt="o", color="tab:blue", ms=5, capsize=2, label="ours (mean ± sd)", zorder=4
    )
    for k in range(1, len(cells)):
        if cells[k].get("group") != cells[k - 1].get("group"):
            ax.axhline(rows[k] + 0.5, color="0.85", lw=0.8, zorder=0)
    ax.set(xscale="log", xlabel="test error (%), log scale", ylim=(-0.7, len(cells) - 0.3), title=title)
    few_log_ticks(ax.xaxis)
    ax.set_yticks(rows, [c["label"] for c in cells], fontsize=8)
    for row, p, o in zip(rows, paper, ours):
        ax.annotate(f"{o / p:.2f}x", (1.0, row), xycoords=("axes fraction", "data"), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=7)  # fmt: skip
    ax.annotate("ours / paper", (1.0, 1.0), xycoords="axes fraction", xytext=(4, 2), textcoords="offset points",
                va="bottom", fontsize=7)  # fmt: skip
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def save_gif(frames: Sequence[Image.Image], path: str | os.PathLike, duration_ms: int = 400) -> Path:
    """Write ``frames`` as a looping GIF (atomically)."""
    if not frames:
        raise ValueError("no frames to write")
    path = Path(path)
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=list(frames[1:]), duration=duration_ms, loop=0)
    return path


def _render(fig: plt.Figure) -> Image.Image:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


@torch.no_grad()
def training_gif(
    model: nn.Module, theta_history: dict[str, Any], path: str | os.PathLike, duration_ms: int = 400
) -> Path:
    """Animate the first transformer over training from the θ kept every epoch (a checkpoint's
    ``theta_history``: ``images (S, C, H, W)``, ``epochs`` and ``theta {name: (E, S, N, P)}``)."""
    if not theta_history.get("theta"):
        raise ValueError("the checkpoint kept no θ history (a model without spatial transformer, or theta_samples=0)")
    name, thetas = next(iter(theta_history["theta"].items()))
    module = transformer_modules(model)[name]
    device = next(model.parameters()).device
    images = theta_history["images"].to(device)
    frames = []
    for epoch, theta in zip(theta_history["epochs"], thetas):
        grid, out = apply_transformer(module, images, theta.to(device))
        frames.append(_render(_transformations_figure(images, grid, out, title=f"epoch {epoch}")))
    return save_gif(frames, path, duration_ms)


def plot_image_rows(
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
        raise ValueError("plot_image_rows needs at least one row")
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


def plot_attention_windows(images: Tensor, boxes: Tensor, windows: Tensor, path: str | Path, columns: int = 4) -> Path:
    """A PNG grid of ``images`` ``(K, 3, H, W)`` in [0, 1] with their boxes ``(K, 4)`` dashed white and the
    windows ``(K, T, 4)`` of each transformer in its own colour (all boxes normalised ``(x0, y0, x1, y1)``; the
    windows of attention θ: :func:`stn.models.cub.attention_boxes`)."""
    count = len(images)
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    fig = Figure(figsize=(3 * columns, 3 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    colours = matplotlib.colormaps["tab10"].colors
    for ax in axes.flat:
        ax.axis("off")
    for k in range(count):
        ax = axes.flat[k]
        ax.imshow(images[k].permute(1, 2, 0).clamp(0, 1).numpy(), extent=(-1, 1, 1, -1))
        for t, (x0, y0, x1, y1) in enumerate(windows[k].tolist()):
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2, ec=colours[t % len(colours)]))
        x0, y0, x1, y1 = boxes[k].tolist()
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5, ec="white", ls="--"))
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(1.05, -1.05)
    fig.suptitle("attention windows (one colour per transformer) and the bird's box (dashed)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return path
