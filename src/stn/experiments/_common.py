"""Pieces every experiment shares: the command-line options, the recipe from them, and the one way a run is
trained or skipped (reports: :func:`stn.io.write_report`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from stn.engine.config import Preset, TrainConfig
from stn.engine.options import add_data_options, add_training_options, output_folder

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from stn.engine.tasks import Task
    from stn.engine.trainer import Trainer

__all__ = [
    "add_common_arguments",
    "budget_help",
    "config_from_args",
    "make_trainer",
    "spec_trainer",
    "train_run",
    "trained_model",
]


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
    (:mod:`stn.data.specs`; ``sets``: when the caller built them already), and on its validation set when the spec
    holds digits out (``"validation"``), resuming a run found in ``run_dir`` unless ``resume=False``; ``options`` go
    to the trainer (``callbacks``, ``title``, ``progress``...)."""
    from stn.data.specs import build
    from stn.engine.trainer import Trainer

    train, test = sets or (build(spec, "train"), build(spec, "test"))
    val = build(spec, "val") if spec.get("validation") else None
    return Trainer(
        model, train, test, task, config, run_dir=run_dir, data_spec=spec, val_data=val, **{"resume": True, **options}
    )


def make_trainer(
    variant: str,
    model: str,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    model_options: dict[str, Any] | None = None,
    num_train: int | None = None,
    num_test: int | None = None,
    data_dir: str | None = None,
    download: bool = False,
    resume: bool = False,
    progress: bool = True,
    figures: bool = True,
    command: str | None = None,
    force: bool = False,
    validation: int | None = None,
) -> Trainer:
    """The :class:`~stn.engine.trainer.Trainer` of one distorted-MNIST run: ``model`` (initialised from the
    config's seed) on ``variant`` with the classification task (used by Table 1, ``stn train``, ``stn demo``, MNIST
    addition and the co-localisation encoder). ``force``: train in a non-empty folder that is not an stn run;
    ``validation``: hold the last that many training digits out and score them every epoch (None or 0: none)."""

    from stn.data import variant_info
    from stn.data.specs import distorted_mnist_spec
    from stn.engine.callbacks import default_callbacks
    from stn.engine.tasks import ClassificationTask
    from stn.models import create_model

    spec = distorted_mnist_spec(
        variant,
        seed=config.seed,
        num_train=num_train,
        num_test=num_test,
        root=data_dir,
        download=download,
        validation=validation or None,
    )
    info = variant_info(variant)
    shape = (info.channels, *info.image_size)
    net = create_model(model, seed=config.seed, in_shape=shape, num_classes=info.num_classes, **(model_options or {}))
    return spec_trainer(
        net,
        spec,
        ClassificationTask(info.num_classes),
        config,
        run_dir,
        callbacks=default_callbacks(figures=figures),
        resume=resume,
        title=f"{model} on {variant}",
        progress=progress,
        command=command,
        force=force,
    )


def train_run(
    label: str,
    run_dir: Path,
    config: TrainConfig,
    spec: Mapping[str, Any],
    make: Callable[[], Trainer],
    model_options: Mapping[str, Any] | None = None,
) -> Trainer | int | None:
    """Train (or resume) the run in ``run_dir`` with the trainer ``make()`` builds, unless
    :func:`~stn.engine.rundir.run_status` finds it finished with ``config``, ``spec`` and ``model_options``: then
    None. Returns the :class:`~stn.engine.trainer.Trainer` after a finished fit, or 128 + the signal that
    interrupted it."""
    from stn.engine.rundir import run_status

    if run_status(run_dir, config, spec, model_options) == "done":
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
    label: str,
    run_dir: Path,
    config: TrainConfig,
    spec: Mapping[str, Any],
    make: Callable[[], Trainer],
    model_options: Mapping[str, Any] | None = None,
) -> nn.Module | int | None:
    """The model of :func:`train_run`'s run (loaded from its checkpoint when it had finished before), 128 + the
    signal that interrupted it, or None in the other processes of a data-parallel run (the main one reports)."""
    from stn.engine.checkpoint import load_model
    from stn.engine.distributed import resolve_device

    trained = train_run(label, run_dir, config, spec, make, model_options)
    if isinstance(trained, int):
        return trained
    if trained is None:
        return load_model(finished_checkpoint(label, run_dir), resolve_device(config.device))[0]
    return trained.model if trained.ctx.is_main else None


def finished_checkpoint(label: str, run_dir: Path) -> Path:
    """The checkpoint file of the finished run in ``run_dir``, which an experiment needs for the trained model.

    Raises:
        FileNotFoundError: the run keeps none (results folders in git carry none), said with what to do.
    """
    from stn.engine.checkpoint import CHECKPOINT_FILE

    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{label}: the finished run in {run_dir} keeps no {CHECKPOINT_FILE} (results folders in git carry "
            "none), and this experiment needs the trained model; delete the folder to train it again"
        )
    return path
