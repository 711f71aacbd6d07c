"""What the training loop calls besides the step: θ statistics and history, reports and figures.

A callback with a ``key`` keeps state in the checkpoint under that key (:meth:`Callback.state_dict`), so that a
resumed run continues it. :func:`default_callbacks` gives the set every experiment uses.

Example:
    >>> [type(c).__name__ for c in default_callbacks(figures=False)]
    ['ThetaStats', 'ThetaHistory', 'Reports']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from stn.engine.checkpoint import THETA_HISTORY
from stn.io import format_markdown_table, write_csv, write_text_atomic
from stn.modules.diagnostics import capture_transformers, theta_diagnostics

if TYPE_CHECKING:
    from stn.engine.trainer import Trainer

__all__ = ["Callback", "Figures", "Reports", "ThetaHistory", "ThetaStats", "default_callbacks"]


class Callback:
    """Base class: every hook does nothing. ``key``: where the state goes in the checkpoint (None: no state)."""

    key: str | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first step of this process (also on resume)."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After the epoch's evaluation, before ``record`` is logged; every process calls it."""

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """After the last step, on the main process only."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class ThetaStats(Callback):
    """Adds :func:`stn.modules.diagnostics.theta_diagnostics` of the first ``samples`` evaluation inputs to each
    epoch's record (``"<transformer>.scale_mean"``, ``".outside_frac"``, ``".nonfinite_frac"``...)."""

    def __init__(self, samples: int = 512) -> None:
        self.samples = samples

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        record.update(theta_diagnostics(trainer.model, trainer.eval_inputs(self.samples)))


class ThetaHistory(Callback):
    """Keeps the θ of every spatial transformer on ``samples`` evaluation inputs at the start and after every
    epoch (:func:`stn.viz.training_gif` animates it): ``{"images": (S, ...), "epochs": [...], "theta":
    {name: (E, S, N, P)}}``. ``samples`` defaults to the config's ``theta_samples``."""

    key = THETA_HISTORY

    def __init__(self, samples: int | None = None) -> None:
        self.samples = samples
        self.history: dict[str, Any] = {"images": torch.empty(0), "epochs": [], "theta": {}}

    def on_fit_start(self, trainer: Trainer) -> None:
        if not self.history["epochs"]:
            count = trainer.config.theta_samples if self.samples is None else self.samples
            self.history["images"] = trainer.eval_inputs(count).cpu().clone()  # not a view: it is saved
            self._record(trainer, 0)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._record(trainer, record["epoch"])

    def _record(self, trainer: Trainer, epoch: int) -> None:
        images = self.history["images"]
        if len(images) == 0:
            return
        captures = capture_transformers(trainer.model, images.to(trainer.device))
        if not captures:
            return
        self.history["epochs"].append(epoch)
        for name, capture in captures.items():
            theta = capture.theta.unsqueeze(0).cpu()
            old = self.history["theta"].get(name)
            self.history["theta"][name] = theta if old is None else torch.cat([old, theta])

    def state_dict(self) -> dict[str, Any]:
        return self.history

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {**state, "images": state["images"].clone()}


class Reports(Callback):
    """``metrics.csv`` and ``summary.md`` (the summary and a table of the epochs) when training finishes."""

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        history = trainer.history
        if not history:
            return
        write_csv(history, trainer.run_dir / "metrics.csv")
        columns = ["epoch", "step", "lr"]
        columns += [f"{split}_{m}" for split in ("train", "test", "val") for m in trainer.task.metrics]
        columns = [c for c in columns if c in history[-1]]  # val_ with a validation set only
        columns += ["images_per_s"]
        columns += [k for k in history[-1] if k.endswith((".scale_mean", ".outside_frac"))]
        facts = "\n".join(f"- {k}: {v}" for k, v in summary.items())
        table = format_markdown_table([[r.get(k) for k in columns] for r in history], columns)
        write_text_atomic(trainer.run_dir / "summary.md", f"# {trainer.title}\n\n{facts}\n\n{table}")


class Figures(Callback):
    """``curves.png`` (losses, metrics, θ diagnostics per epoch) and, for a model with a spatial transformer,
    ``transformations.png`` (what it does to the θ history's samples) when training finishes."""

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        from stn import viz

        if trainer.history:
            viz.plot_curves(trainer.history, trainer.run_dir / "curves.png", title=trainer.title)
        images = trainer.eval_inputs(trainer.config.theta_samples)
        if len(images) and images.dim() == 4 and capture_transformers(trainer.model, images[:1]):
            viz.plot_model_transformations(trainer.model, images, trainer.run_dir / "transformations.png")


def default_callbacks(*, figures: bool = True, stats_samples: int = 512) -> list[Callback]:
    """θ statistics of ``stats_samples`` evaluation inputs every epoch, the θ history, the reports, and (unless
    ``figures=False``) the figures."""
    callbacks: list[Callback] = [ThetaStats(stats_samples), ThetaHistory(), Reports()]
    return [*callbacks, Figures()] if figures else callbacks
