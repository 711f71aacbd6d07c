"""What the ``stn`` command and its sub-commands share without importing their own package: the list of
sub-commands with their one-line summaries (:data:`COMMANDS`) and the user error a command reports
(:class:`CommandError`). :mod:`stn.cli` re-exports both.

Example:
    >>> list(COMMANDS)[:2], issubclass(CommandError, Exception)
    (['data', 'train'], True)
"""

from __future__ import annotations

__all__ = ["COMMANDS", "CommandError"]

# Sub-command -> its one-line summary, in the order ``stn --help`` lists them. The module stn.cli.<name> passes
# the same summary as help= (tests/cli/test_help.py checks that the two agree).
COMMANDS: dict[str, str] = {
    "data": "preview the distorted MNIST variants, download MNIST",
    "train": "train a model on distorted MNIST",
    "eval": "test error of a checkpoint",
    "reproduce": "reproduce an experiment of the paper (tables, figures)",
    "visualize": "figure of the learnt transformations (inputs, sampling grids, outputs)",
    "export": "export a checkpoint to ONNX or TorchScript",
    "demo": "train a CNN and an ST-CNN on RTS digits in minutes, compare, visualise",
}


class CommandError(Exception):
    """A user error that a command reports; :func:`stn.cli.main` prints its message as one line and exits 1."""
