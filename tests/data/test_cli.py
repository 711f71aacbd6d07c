"""``stn data`` (src/stn/cli/data.py)."""

from __future__ import annotations

import urllib.error
from collections.abc import Callable
from pathlib import Path

import pytest

from stn.cli import main
from stn.data import VARIANTS


def test_preview_writes_a_sheet(
    no_mnist_anywhere: Path, make_mnist_dir: Callable, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = make_mnist_dir("root", n_test=8)
    out = tmp_path / "tc.png"
    code = main(
        [
            "data",
            "preview",
            "--data",
            "TC",
            "--out",
            str(out),
            "--data-dir",
            str(folder),
            "--n",
            "4",
            "--seed",
            "2",
            "--split",
            "test",
        ]
    )
    assert code == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "MNIST test: 8 digits" in printed and f"wrote {out}" in printed


def test_preview_all_writes_one_sheet_per_variant(
    no_mnist_anywhere: Path, make_mnist_dir: Callable, tmp_path: Path
) -> None:
    folder = make_mnist_dir("root", n_train=12)
    assert (
        main(
            [
                "data",
                "preview",
                "--data",
                "all",
                "--out",
                str(tmp_path / "sheets"),
                "--data-dir",
                str(folder),
                "--n",
                "2",
            ]
        )
        == 0
    )
    assert sorted(p.stem for p in (tmp_path / "sheets").iterdir()) == sorted(VARIANTS)


def test_unknown_variant_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["data", "preview", "--data", "zz", "--out", str(tmp_path / "x.png")])
    assert info.value.code == 2


def test_offline_download_fails_with_a_message(
    no_mnist_anywhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def offline(url: str, timeout: float = 0) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    assert main(["data", "download", "--data-dir", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "could not fetch" in err and "t10k-images-idx3-ubyte.gz" in err


def test_missing_data_fails_with_a_message(
    no_mnist_anywhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("stn.data.mnist._sample_path", lambda: None)
    assert main(["data", "preview", "--data", "r", "--out", str(tmp_path / "r.png")]) == 1
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err
