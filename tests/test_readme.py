"""The README runs as written: its test command is what CI runs (keep .ci/run and the README in step), and its
interop snippet runs in a fresh namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


def test_the_interop_snippet_runs_as_written() -> None:
    pytest.importorskip("cv2", reason="opencv-python-headless (the [test] extra) runs the README's OpenCV snippet")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"## Coming from OpenCV[^\n]*\n.*?```python\n(.*?)```", readme, re.S)
    assert match, "README.md has no Python block under '## Coming from OpenCV ...'"
    namespace: dict = {}
    exec(compile(match.group(1), "README.md interop snippet", "exec"), namespace)  # in a fresh namespace
    assert tuple(namespace["out"].shape) == (1, 3, namespace["h_out"], namespace["w_out"])


def test_the_readme_table1_at_a_glance_is_the_generated_summary() -> None:
    # results/summary/summary.md is written by `stn reproduce summary`; the README shows its table, links rebased
    summary = (ROOT / "results" / "summary" / "summary.md").read_text(encoding="utf-8")
    generated = [line.replace("](../", "](results/") for line in summary.splitlines() if line.startswith("|")]
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = readme.index(generated[0])
    assert readme[start : start + len(generated)] == generated
    assert readme[start + len(generated)] == ""  # nothing of another table run on into it


def test_the_readme_gives_every_shipped_entry_the_test_error_it_was_published_with() -> None:
    """Each `stn eval --pretrained NAME:TAG --data TAG` line of the README names the error that entry's manifest
    records (scripts/publish_pretrained.py scored it on the official test split and refused a mismatch with its
    run), and every shipped entry has such a line."""
    from stn.models import list_pretrained
    from stn.models.pretrained import read_manifest

    text = (ROOT / "README.md").read_text()
    lines = re.findall(r"^stn eval --pretrained (\S+):(\S+) --data (\S+) .*# error (\d+\.\d\d)%", text, re.M)
    manifest = read_manifest()
    named = {}
    for model, tag, data, error in lines:
        assert data == tag, (model, tag, data)
        named[f"{model}.{tag}"] = error
    assert sorted(named) == list_pretrained()
    for name, error in named.items():
        assert error == f"{100 * manifest[name]['test_error']:.2f}", name
