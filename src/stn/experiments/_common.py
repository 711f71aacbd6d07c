"""Pieces every experiment shares: the command-line options, the recipe from them, the one way a run is trained
or skipped, its report (a Markdown table of records, written with the records) and a figure of labelled rows of
images.

Example:
    >>> print(markdown_table([{"model": "cnn", "error": 1.2345}], {"model": "{model}", "error (%)": "{error:.2f}"}))
    | model | error (%) |
    |---|---|
    | cnn | 1.23 |
    <BLANKLINE>
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from stn.engine.config import Preset, TrainConfig
from stn.engine.options import add_data_options, add_training_options, output_folder
from stn.io import format_markdown_table, write_text_atomic

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from stn.engine.tasks import Task
    from stn.engine.trainer import Trainer

__all__ = [
    "add_common_arguments",
    "budget_help",
    "config_from_args",
    "image_rows",
    "markdown_table",
    "spec_trainer",
    "train_run",
    "trained_model",
    "write_report",
]

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixel edges


def budget_help(budgets: Mapping[str, Preset]) -> str:
    """``--budget``'s help: each preset's description, steps and learning rate, read from the presets."""
    parts = []
    for name, b in budgets.items():
        length = f"{b.iterations:,} steps" if b.iterations else f"{b.epochs} epochs"
        parts.append(f"{name}: {b.description} ({length} of {b.batch_size} at lr {b.lr:g})")
    return ("; ".join(parts) + f" (default {next(iter(budgets))})").replace("%", "%%")  # argparse formats help


def add_common_arguments(
    parser: argparse.ArgumentParser,
    budgets: Mapping[str, Preset],
    out: str | None,
    *,
    mnist: bool = True,
    runs: str | None = None,
) -> None:
    """``--budget``, ``--out`` (default ``out``), ``--runs-dir`` (where the training engine's run folders are kept;
    only when ``runs`` is given), ``--data-dir`` (where MNIST is; not with ``mnist=False``), the engine's recipe
    options (:func:`stn.engine.options.add_training_options`) and ``--quiet``."""
    parser.add_argument("--budget", choices=tuple(budgets), default="quick", help=budget_help(budgets))
    shown = out or "runs/<experiment>-<budget>"
    parser.add_argument("--out", type=output_folder, default=out and Path(out), help=f"output folder (default {shown})")
    if runs is not None:
        parser.add_argument(
            "--runs-dir",
            type=output_folder,
            default=Path(runs),
            help=f"where the runs (checkpoints, metrics, curves) are kept and resumed from (default {runs})",
        )
    if mnist:
        add_data_options(parser, download=False)
    add_training_options(parser, budgets)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(presets: Mapping[str, Preset], args: argparse.Namespace, **fixed: Any) -> TrainConfig:
    """The ``--budget`` preset's config with every recipe option given on the command line (and ``fixed``)."""
    given = {f: getattr(args, f, None) for f in TrainConfig.__dataclass_fields__}
    return presets[args.budget].config(**{**given, **fixed})


def spec_trainer(
    model: nn.Module,
    spec: Mapping[str, Any],
    task: Task,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    sets: tuple[Dataset, Dataset] | None = None,
    **options: Any,
) -> Trainer:
    """The :class:`~stn.engine.trainer.Trainer` of ``model`` on the training and test sets of the data spec ``spec``
    (:mod:`stn.data.specs`; ``sets``: when the caller built them already), resuming a run found in ``run_dir``
    unless ``resume=False``; ``options`` go to the trainer (``callbacks``, ``title``, ``progress``...)."""
    from stn.data.specs import build
    from stn.engine.trainer import Trainer

    train, test = sets or (build(spec, "train"), build(spec, "test"))
    return Trainer(model, train, test, task, config, run_dir=run_dir, data_spec=spec, **{"resume": True, **options})


def train_run(
    label: str, run_dir: Path, config: TrainConfig, spec: Mapping[str, Any], make: Callable[[], Trainer]
) -> Trainer | int | None:
    """Train (or resume) the run in ``run_dir`` with the trainer ``make()`` builds, unless
    :func:`~stn.engine.trainer.run_status` finds it finished with ``config`` and ``spec``: then None. Returns the
    :class:`~stn.engine.trainer.Trainer` after a finished fit, or 128 + the signal that interrupted it."""
    from stn.engine.trainer import run_status

    if run_status(run_dir, config, spec) == "done":
        print(f"{label}: finished before, skipped ({run_dir})")
        return None
    print(f"{label}: training in {run_dir}", flush=True)
    trainer = make()
    result = trainer.fit()
    if not result.finished:
        print(f"{label}: interrupted at step {result.step}; run the same command again to continue")
        return 128 + (result.signal or 0)
    return trainer


def trained_model(
    label: str, run_dir: Path, config: TrainConfig, spec: Mapping[str, Any], make: Callable[[], Trainer]
) -> nn.Module | int | None:
    """The model of :func:`train_run`'s run (loaded from its checkpoint when it had finished before), 128 + the
    signal that interrupted it, or None in the other processes of a data-parallel run (the main one reports)."""
    from stn.engine.checkpoint import load_model
    from stn.engine.trainer import resolve_device

    trained = train_run(label, run_dir, config, spec, make)
    if isinstance(trained, int):
        return trained
    if trained is None:
        return load_model(run_dir, resolve_device(config.device))[0]
    return trained.model if trained.ctx.is_main else None


def markdown_table(records: Sequence[Mapping[str, Any]], columns: Mapping[str, str]) -> str:
    """A Markdown table of ``records``, one row each; ``columns``: ``{header: format string of a record's fields}``
    (``str.format_map``)."""
    return format_markdown_table([[cell.format_map(r) for cell in columns.values()] for r in records], list(columns))


def write_report(out: str | Path, name: str, text: str, record: Mapping[str, Any] | None = None) -> Path:
    """Write ``<out>/<name>.md`` (``text``) and, when given, ``<out>/results.json`` (``record``) atomically;
    returns the Markdown's path."""
    if record is not None:
        write_text_atomic(Path(out) / "results.json", json.dumps(record, indent=2) + "\n")
    return write_text_atomic(Path(out) / f"{name}.md", text)


def image_rows(
    rows: Sequence[tuple[str, Tensor]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    boxes: dict[int, Sequence[Sequence[tuple[Box, str]]]] | None = None,
) -> Path:
    """A grid of grayscale images: one labelled row per ``(label, images (B, H, W))``, one column per image.

    Args:
        rows: the rows, top to bottom; every row must have the same number of images.
        path: the PNG to write (atomically).
        boxes: ``{row: per column, a list of ((x0, y0, x1, y1), colour)}`` rectangles drawn over that row.
    """
    import matplotlib.pyplot as plt  # here, so that building the command-line parsers stays light
    from matplotlib.patches import Rectangle

    from stn.viz import save_figure

    if not rows:
        raise ValueError("image_rows needs at least one row")
    columns = len(rows[0][1])
    if any(len(images) != columns for _, images in rows):
        raise ValueError(f"every row needs the same number of images, got {[len(im) for _, im in rows]}")
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.2 * columns + 0.9, 1.25 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            image = images[c].detach().float().cpu()
            ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=max(1.0, image.max().item()))
            for (x0, y0, x1, y1), colour in (boxes or {}).get(r, [[]] * columns)[c]:
                # pixel edges -> imshow coordinates (pixel centres at integers)
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.2))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
