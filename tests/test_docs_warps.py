"""docs/warps.md ("Warps as objects") runs: each of its Python blocks, in a fresh namespace, asserts what it shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "warps.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.S | re.M)


def test_the_page_has_its_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_every_example_runs(index: int) -> None:
    exec(compile(BLOCKS[index], f"{PAGE.name} block {index}", "exec"), {})
