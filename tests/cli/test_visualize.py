"""``stn visualize``."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from stn.cli import main


def test_figure_gif_and_curves(trained_run: Path, tiny_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "fig.png"
    assert (
        main(
            [
                "visualize",
                str(trained_run / "checkpoint.pt"),
                "--out",
                str(out),
                "--num",
                "4",
                "--gif",
                "--curves",
                "--data-dir",
                str(tiny_mnist),
            ]
        )
        == 0
    )
    assert Image.open(out).format == "PNG"
    with Image.open(out.with_suffix(".gif")) as gif:
        assert gif.n_frames == 3  # before training and after each of the 2 epochs
    assert (tmp_path / "fig-curves.png").is_file()
