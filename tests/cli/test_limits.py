"""The ceilings of the options that size memory (stn.cli._limits): every such option of every command has one,
and a value above it is one line naming the ceiling, before any work starts."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Iterator

import pytest

from stn.cli import build_parser, main
from stn.cli._limits import LIMITS

# int options whose names say they count or size something, and why each sizes no memory worth a ceiling
NOT_MEMORY = {
    "--iterations": "time, not memory",
    "--epochs": "time, not memory",
    "--seed": "a seed",
    "--epoch": "which epoch's distortions to show",
    "--first": "an index into the test set",
    "--threads": "CPU threads",
    "--stride": "larger strides search fewer crops",
    "--rounds": "time, not memory",
    "--fit-steps": "time, not memory",
    "--steps": "time, not memory",
    "--limit-train": "a cap below the dataset's size",
    "--limit-test": "a cap below the dataset's size",
    "--crop": "a choice of 64 or 128",
    "--seeds": "how many runs, one after the other",
    "--opset": "an ONNX version",
}
SIZE_LIKE = re.compile(r"^--(n|num.*|.*size.*|.*samples?|.*images?|.*workers?|.*params?|limit.*|.*steps|stride)$")


def _options(parser: argparse.ArgumentParser, prog: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _options(child, f"{prog} {name}")
        else:
            yield prog, action


def _every_option() -> list[tuple[str, argparse.Action]]:
    return list(_options(build_parser(), "stn"))


def test_every_option_that_sizes_memory_has_a_ceiling() -> None:
    unbounded = []
    for prog, action in _every_option():
        names = action.option_strings
        if any(SIZE_LIKE.match(o) for o in names) and not any(o in NOT_MEMORY for o in names):
            ceilings = {LIMITS[o][0] for o in names if o in LIMITS}
            if len(ceilings) != 1 or getattr(action.type, "stn_ceiling", None) not in ceilings:
                unbounded.append(f"{prog} {'/'.join(names)}")
    assert not unbounded, f"options without a ceiling (add them to LIMITS or NOT_MEMORY): {unbounded}"


def test_every_ceiling_is_reached_by_some_command_and_named_in_its_help() -> None:
    bounded = {o: a for _, a in _every_option() for o in a.option_strings if o in LIMITS}
    assert sorted(bounded) == sorted(LIMITS)
    for option, action in bounded.items():
        assert f"at most {LIMITS[option][0]:,}" in action.help


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "preview", "--data", "rts", "--out", "x.png", "--n", "100000"],
        ["train", "--data", "rts", "--model", "cnn", "--batch-size", "1000000"],
        ["train", "--data", "rts", "--model", "cnn", "--num-train", "100000000"],
        ["eval", "run", "--num-test", "20000"],
        ["visualize", "run", "--out", "x.png", "--num", "11"],
        ["reproduce", "table2", "--num-workers", "1000"],
        ["demo", "--batch-size", "100000"],
    ],
)
def test_a_value_above_the_ceiling_is_one_line_naming_it_before_any_work(
    argv: list[str], tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error, exit code 2
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    option = next(a for a in argv if a.startswith("--") and a[2:] in {o[2:] for o in LIMITS})
    assert re.search(rf"argument {option}: at most {LIMITS[option][0]:,} \(.*\), got {argv[-1]}", err), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert time.perf_counter() - start < 20 and list(tmp_path.iterdir()) == []  # refused before any work


def test_values_at_the_ceiling_pass() -> None:
    args = build_parser(["data"]).parse_args(["data", "preview", "--data", "rts", "--out", "x.png", "--n", "400"])
    assert args.n == 400
