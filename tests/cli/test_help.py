"""``--help`` of every command: plain text (no reST markup from the docstrings it is built from), summaries that
agree with the command modules, and numbers that are the code's own."""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Iterator

import pytest

from stn.cli import COMMANDS, build_parser
from stn.cli._help import plain

_MARKUP = re.compile(r"``|:(?:func|mod|class|meth|data|attr|obj|ref|doc):`")


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _parsers(child)


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_every_help_is_plain_text() -> None:
    helps = {p.prog: p.format_help() for p in _parsers(build_parser())}
    expected = {f"stn {name}" for name in COMMANDS} | {"stn", "stn data preview", "stn reproduce table1"}
    assert expected <= set(helps)  # the walk reached the sub-sub-commands
    marked = {prog: _MARKUP.findall(text) for prog, text in helps.items() if _MARKUP.search(text)}
    assert not marked


def test_the_lazy_summaries_are_the_modules_own() -> None:
    # `stn --help` lists COMMANDS without importing the modules; each module registers the same summary.
    full = {c.dest: c.help for c in _subparsers(build_parser())._choices_actions}
    lazy = {c.dest: c.help for c in _subparsers(build_parser([]))._choices_actions}
    assert full == lazy == COMMANDS


def test_building_one_command_leaves_the_others_as_names() -> None:
    choices = _subparsers(build_parser(["data"])).choices
    assert list(choices) == list(COMMANDS)
    assert _subparsers(choices["data"]) is not None
    assert not choices["train"]._actions[1:]  # only -h: nothing of train was built


def test_demo_help_states_the_codes_numbers() -> None:
    from stn.cli import demo
    from stn.data import variant_info
    from stn.data.distortions import rts

    text = " ".join(_subparsers(build_parser(["demo"])).choices["demo"].format_help().split())
    defaults = {name: p.default for name, p in inspect.signature(rts).parameters.items()}
    found = re.search(r"rotated ±(\d+)°, scaled ([\d.]+)-([\d.]+), placed at random in (\d+)x(\d+)", text)
    assert found, text
    angle, low, high, width, height = found.groups()
    assert float(angle) == defaults["max_angle"]
    assert (float(low), float(high)) == tuple(defaults["scale"])
    assert (int(height), int(width)) == (defaults["size"],) * 2 == variant_info("rts").image_size
    assert f"±{defaults['max_angle']:g}°" in variant_info("rts").description  # the variant table agrees
    recipe = re.search(r"for (\d+) steps of (\d+) digits each .* learning rate ([\d.]+)", text)
    assert recipe, text
    assert (int(recipe[1]), int(recipe[2]), float(recipe[3])) == (demo._ITERATIONS, demo._BATCH_SIZE, demo._LR)
    for option, value in (("iterations", demo._ITERATIONS), ("batch-size", demo._BATCH_SIZE), ("lr", demo._LR)):
        assert re.search(rf"--{option} \S+ .*?\(?default {value}\)?", text), option


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("``stn demo`` runs", "stn demo runs"),
        ("see :func:`stn.warp` and :mod:`stn.engine.trainer`", "see stn.warp and stn.engine.trainer"),
        (":class:`~stn.modules.SpatialTransformer`", "SpatialTransformer"),
        (":meth:`the epoch <DistortedMNIST.set_epoch>`", "the epoch"),
        (":py:func:`warp`", "warp"),
        ("`interpreted` text, *emphasis* and **strong**", "interpreted text, emphasis and strong"),
        ("Example (shell)::\n\n    stn demo", "Example (shell):\n\n    stn demo"),
        ("N * C * H * W * 4 bytes, 2*x, a_b_c, 100%", "N * C * H * W * 4 bytes, 2*x, a_b_c, 100%"),
    ],
)
def test_plain(text: str, expected: str) -> None:
    assert plain(text) == expected


def test_help_texts_use_the_words_of_their_own_command(capsys: pytest.CaptureFixture[str]) -> None:
    """'budget' and 'preset' are notions of stn reproduce: the other commands' help does not speak of them."""
    from stn.cli import main

    for command in (["train"], ["eval"], ["visualize"], ["export"], ["demo"], ["data", "preview"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = capsys.readouterr().out.lower()
        assert "budget" not in text and "preset" not in text, command
