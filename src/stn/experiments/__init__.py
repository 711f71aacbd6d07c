"""Reproductions of the paper's experiments, each run by ``stn reproduce <name>``.

An experiment is a module of this package that defines

* a module docstring: its first line is the one-line help, the whole the ``--help`` description;
* ``add_arguments(parser: argparse.ArgumentParser) -> None``: its options;
* ``run(args: argparse.Namespace) -> int``: does the work, returns the exit code.

An experiment is a specification on top of the training engine (:mod:`stn.engine`): model, data spec
(:mod:`stn.data.specs`), task and budgets (:class:`~stn.engine.config.Preset` s); :mod:`stn.experiments._common`
trains or skips its runs.

To add one, write the module and add a line to :data:`EXPERIMENTS`. ``stn reproduce`` imports every module
listed when it builds its parser, so keep module-level imports light (import heavy optional dependencies
inside ``run``); a module that fails to import is listed with the reason instead of breaking the command.

Example:
    >>> names()
    ['3d', 'addition', 'colocalization', 'summary', 'table1', 'table2', 'table3']
    >>> load("table1").run  # doctest: +ELLIPSIS
    <function run at ...>
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXPERIMENTS", "load", "names"]

# name on the command line -> module implementing it
EXPERIMENTS: dict[str, str] = {
    "table1": "stn.experiments.table1",
    "table2": "stn.experiments.table2",
    "table3": "stn.experiments.table3",
    "addition": "stn.experiments.addition",
    "colocalization": "stn.experiments.colocalization",
    "3d": "stn.experiments.volume3d",
    # trains nothing: gathers the Table 1 runs of a results folder into one table and figure
    "summary": "stn.experiments.summary",
}


def names() -> list[str]:
    """The registered experiment names, sorted."""
    return sorted(EXPERIMENTS)


def load(name: str) -> ModuleType:
    """The module of experiment ``name``.

    Raises:
        KeyError: unknown name (the message lists the known ones).
        TypeError: the module lacks ``add_arguments`` or ``run``.
    """
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known experiments: {', '.join(names())}")
    module = importlib.import_module(EXPERIMENTS[name])
    missing = [f for f in ("add_arguments", "run") if not callable(getattr(module, f, None))]
    if missing:
        raise TypeError(f"experiment module {module.__name__} lacks {', '.join(missing)}")
    return module
