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
                str(trained_run),  # the run folder stands for its checkpoint
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


def test_out_naming_a_folder_is_a_one_line_usage_error(trained_run: Path, tmp_path: Path, capsys) -> None:
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(["visualize", str(trained_run), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and len(err.strip().splitlines()) == 1


def test_a_model_without_transformer_is_refused_clearly(tiny_mnist: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "cnn"
    argv = ["train", "--data", "r", "--model", "cnn", "--iterations", "1", "--batch-size", "8", "--num-train", "8",
            "--num-test", "8", "--target-params", "5000", "--data-dir", str(tiny_mnist), "--out", str(run),
            "--quiet", "--no-figures"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["visualize", str(run), "--out", str(tmp_path / "f.png"), "--data-dir", str(tiny_mnist)]) == 1
    assert "no spatial transformer" in capsys.readouterr().err
