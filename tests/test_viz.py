"""Figures: transformation grids, training curves and the animation over training."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from stn import sampling_grid, viz
from stn.models import create_model
from stn.viz import plot_attention_windows, plot_image_rows


def test_the_grid_is_drawn_in_input_pixels() -> None:
    fig, ax = plt.subplots()
    theta = torch.tensor([[0.5, 0.0, 0.5, 0.0, 0.5, 0.0]])  # the right half of the middle, zoomed in 2x
    viz._draw_grid(ax, sampling_grid(theta, "affine", (20, 20))[0], (40, 40))
    border = ax.lines[-1].get_xydata()
    plt.close(fig)
    # output pixel centres sit at normalised (2i+1)/20-1, i.e. source x in [0.025, 0.975], y in [-0.475, 0.475]
    assert border[:, 0].min() == pytest.approx(20.0) and border[:, 0].max() == pytest.approx(39.0)
    assert border[:, 1].min() == pytest.approx(10.0) and border[:, 1].max() == pytest.approx(29.0)


def test_transformations_figure(tmp_path: Path) -> None:
    inputs = torch.rand(4, 1, 42, 42)
    theta = torch.tensor([[0.8, 0.1, 0.1, -0.1, 0.8, 0.0]]).expand(4, 6)
    grids = sampling_grid(theta, "affine", (21, 21))
    path = viz.plot_transformations(inputs, grids, torch.rand(4, 1, 21, 21), tmp_path / "f.png", title="t")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height  # 4 columns, 3 rows


def test_transformations_figure_for_two_transformers_and_rgb(tmp_path: Path) -> None:
    grids = sampling_grid(torch.tensor([[1.0, 0, 0, 0, 1, 0]]).expand(6, 6), "affine", (8, 8)).view(3, 2, 8, 8, 2)
    path = viz.plot_transformations(torch.rand(3, 3, 16, 16), grids, torch.rand(3, 2, 3, 8, 8), tmp_path / "f.png")
    assert path.is_file()


def test_mismatched_shapes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="grids"):
        viz.plot_transformations(
            torch.rand(2, 1, 8, 8), torch.rand(3, 8, 8, 2), torch.rand(3, 1, 8, 8), tmp_path / "f.png"
        )


def test_model_figure_needs_a_transformer(tmp_path: Path) -> None:
    images = torch.rand(3, 1, 28, 28)
    assert viz.plot_model_transformations(create_model("st-cnn-proj"), images, tmp_path / "st.png").is_file()
    with pytest.raises(ValueError, match="no spatial transformer"):
        viz.plot_model_transformations(create_model("cnn"), images, tmp_path / "cnn.png")


def history(epochs: int, with_theta: bool) -> list[dict]:
    records = []
    for e in range(1, epochs + 1):
        record = {"epoch": e, "train_loss": 1 / e, "test_loss": 1.2 / e, "train_error": 0.5 / e, "test_error": 0.6 / e}
        if with_theta:
            record |= {
                "transformer.scale_mean": 1 - 0.1 * e,
                "transformer.scale_std": 0.05,
                "transformer.outside_frac": 0.01 * e,
                "transformer.fold_frac": 0.0,
            }
        records.append(record)
    return records


@pytest.mark.parametrize("with_theta", [True, False])
def test_curves(tmp_path: Path, with_theta: bool) -> None:
    path = viz.plot_curves(history(3, with_theta), tmp_path / "curves.png", title="run")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > (1200 if with_theta else 600)  # four panels with θ diagnostics, else two


def test_curves_need_records(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        viz.plot_curves([], tmp_path / "c.png")


def test_training_gif_has_one_frame_per_kept_epoch(tmp_path: Path) -> None:
    model = create_model("st-fcn-aff", in_shape=(1, 28, 28))
    identity = torch.tensor([1.0, 0, 0, 0, 1, 0])
    thetas = torch.stack([identity * s + torch.tensor([0, 0, 0.1 * s, 0, 0, 0]) for s in (1.0, 0.9, 0.8)])
    history = {
        "images": torch.rand(3, 1, 28, 28),
        "epochs": [0, 1, 2],
        "theta": {"transformer": thetas.view(3, 1, 1, 6).expand(3, 3, 1, 6)},
    }
    path = viz.training_gif(model, history, tmp_path / "anim.gif")
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3
    with pytest.raises(ValueError, match="no θ history"):
        viz.training_gif(model, {"images": torch.rand(1, 1, 28, 28), "epochs": [], "theta": {}}, tmp_path / "x.gif")


def test_plot_image_rows_draws_one_labelled_row_each_with_boxes(tmp_path: Path) -> None:
    rows = [("first", torch.zeros(3, 10, 10)), ("second", torch.ones(3, 10, 10))]
    boxes = {0: [[((1.0, 1.0, 6.0, 6.0), "red")], [], []]}
    path = plot_image_rows(rows, tmp_path / "rows.png", title="t", boxes=boxes)
    with Image.open(path) as figure:
        pixels = np.asarray(figure.convert("RGB")).reshape(-1, 3).astype(int)
    assert ((pixels[:, 0] > 200) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)).any()  # the red box
    assert list(tmp_path.iterdir()) == [path]
    with pytest.raises(ValueError, match="same number of images"):
        plot_image_rows([("a", torch.zeros(2, 4, 4)), ("b", torch.zeros(3, 4, 4))], tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one row"):
        plot_image_rows([], tmp_path / "x.png")


def test_plot_attention_windows_draws_each_transformer_and_the_box(tmp_path):
    images = torch.zeros(5, 3, 20, 30)
    boxes = torch.tensor([[-0.9, -0.9, 0.9, 0.9]]).expand(5, 4)
    windows = torch.tensor([[-0.5, -0.5, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]]).expand(5, 2, 4)
    path = plot_attention_windows(images, boxes, windows, tmp_path / "a.png")
    with Image.open(path) as figure:
        assert figure.size == (960, 480)  # 4 columns x 2 rows of 3-inch panels at 80 dpi
        pixels = np.asarray(figure.convert("RGB")).reshape(-1, 3)
    for colour in [(31, 119, 180), (255, 127, 14), (255, 255, 255)]:  # the two transformers' colours, the box
        assert (np.abs(pixels.astype(int) - colour).sum(1) < 30).any(), colour
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


@pytest.mark.parametrize(
    "test_errors",
    [
        [0.6 * np.exp(-e / 6) + 0.008 for e in range(60)],  # 61% -> 0.8%: two decades
        [0.03 - 0.0002 * e for e in range(20)],  # 3.0% -> 2.6%: a fraction of a decade
        [0.9 * 10 ** (-e / 3) for e in range(18)],  # 90% -> 0.0002%: six decades
    ],
    ids=["two-decades", "within-a-decade", "six-decades"],
)
def test_the_log_error_axis_has_a_few_plain_tick_labels_that_do_not_overlap(
    test_errors: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = []
    monkeypatch.setattr(viz, "save_figure", lambda fig, path: figures.append(fig) or Path(path))
    records = [
        {"epoch": e + 1, "train_loss": 1.0, "test_loss": 1.0, "train_error": 1.1 * err, "test_error": err}
        for e, err in enumerate(test_errors)
    ]
    viz.plot_curves(records, tmp_path / "curves.png")
    fig = figures[0]
    try:
        fig.canvas.draw()
        axis = fig.axes[1]
        lo, hi = axis.get_ylim()
        labels = [t for v, t in zip(axis.get_yticks(), axis.get_yticklabels()) if lo <= v <= hi]
        texts = [t.get_text() for t in labels]
        assert 2 <= len(texts) <= 7 and len(set(texts)) == len(texts), texts
        assert not [t for t in axis.get_yticklabels(minor=True) if t.get_text()]  # no minor labels
        assert all(re.fullmatch(r"\d+(\.\d+)?", t) for t in texts), texts  # plain numbers, no 10^k or 2e-05
        boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.y0)
        assert all(a.y1 <= b.y0 for a, b in itertools.pairwise(boxes)), texts  # none overlaps the next
    finally:
        plt.close(fig)


def test_curves_draw_every_metric_of_the_task_and_the_validation_split(tmp_path: Path, monkeypatch) -> None:
    figures = []
    monkeypatch.setattr(viz, "save_figure", lambda fig, path: figures.append(fig) or Path(path))
    records = [  # a task without an error metric (co-localisation's), with a validation split
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "test_loss": 1.2 / e, "train_iou": 0.1 * e,
         "val_iou": 0.1 * e, "test_iou": 0.09 * e, "train_localised": 0.2, "val_localised": 0.2, "test_localised": 0.3}
        for e in (1, 2, 3)
    ]  # fmt: skip
    viz.plot_curves(records, tmp_path / "curves.png")
    axes = figures[0].axes
    assert [ax.get_title() for ax in axes] == ["loss", "iou", "localised"]
    assert [line.get_label() for line in axes[0].get_lines()] == ["train", "val", "test"]
