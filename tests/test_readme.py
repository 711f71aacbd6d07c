"""The README's test command is what CI runs: keep .ci/run and the README in step."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fenced_commands(text: str) -> list[str]:
    return [
        line.strip() for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S) for line in block.splitlines()
    ]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    test_commands = [c for c in _fenced_commands(readme[:3000]) if "pytest" in c]
    assert test_commands, "the README must start with a test command that runs pytest"
    assert test_commands[0] in ci_lines, f".ci/run does not run the README's test command {test_commands[0]!r}"


def test_readme_starts_with_the_main_job() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = _fenced_commands(readme[:3000])
    assert commands and "stn " in commands[0], "the README's first command must install and run the main job"
