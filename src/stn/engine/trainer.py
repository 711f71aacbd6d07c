"""The training loop: distorted MNIST, fresh distortions every epoch, a fixed test set, checkpoints every epoch.

A run lives in one folder::

    run_dir/
      checkpoint.pt      model, optimiser and loop state (every epoch, on Ctrl-C / SIGTERM, at the end)
      config.json        the TrainConfig
      metrics.jsonl      one record per epoch: losses, errors, learning rate, throughput, θ diagnostics
      metrics.csv, summary.md, summary.json    written when training finishes
      curves.png, transformations.png          figures, written when training finishes

Resuming (``resume=True``) regenerates the interrupted epoch's distortions and batch order from the seed and
continues at the saved step, so the final weights equal those of an uninterrupted run (on the CPU, where the
arithmetic is deterministic). Under ``torchrun`` every process trains on its share of each global batch
(DistributedDataParallel); only rank 0 writes files and shows progress.

Example:
    >>> result = train(TrainConfig(data="rts", model="st-cnn-aff", iterations=500), "runs/rts-st-cnn-aff")
    >>> result.summary["test_error"]  # doctest: +SKIP
    0.031
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from stn.data import DistortedMNIST
from stn.data.datasets import block_seed
from stn.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stn.engine.config import TEST_SEED, TrainConfig
from stn.engine.diagnostics import capture_transformers, theta_diagnostics
from stn.engine.distributed import DistContext, all_reduce_sum, any_process, close_distributed, init_distributed
from stn.engine.metrics import MetricsLog, format_markdown_table, write_csv, write_text_atomic
from stn.models import create_model
from stn.models.mnist import count_parameters
from stn.modules import param_groups

__all__ = [
    "CHECKPOINT_FILE",
    "SUMMARY_FILE",
    "TrainResult",
    "Trainer",
    "apply_lr_schedule",
    "evaluate",
    "learning_rate",
    "make_sgd",
    "resolve_device",
    "scheduled_step",
    "train",
]

CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "summary.json"
_DIAGNOSTIC_BATCH = 512  # test digits whose θ statistics are logged every epoch
_POSTFIX_EVERY = 10  # steps between progress-bar updates (each reads values back from the device)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise ``torch.device(name)`` (checked to exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu or auto")
    return device


def make_sgd(
    model: nn.Module, *, lr: float, momentum: float, weight_decay: float, localization_lr_scale: float
) -> torch.optim.SGD:
    """SGD over :func:`stn.param_groups`: localisation nets at ``lr * localization_lr_scale``, the rest at ``lr``."""
    groups = param_groups(model, lr, localization_lr_scale)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def learning_rate(step: int, total_steps: int, base_lr: float, milestones: tuple[float, ...], gamma: float) -> float:
    """Step schedule: ``base_lr * gamma ** k`` after ``k`` of the ``milestones`` (fractions of ``total_steps``).

    Example:
        >>> [learning_rate(s, 150_000, 0.01, (1 / 3, 2 / 3), 0.1) for s in (0, 50_000, 100_000)]
        [0.01, 0.001, 0.0001]
    """
    passed = sum(step >= round(m * total_steps) for m in milestones)
    return base_lr * gamma**passed


def apply_lr_schedule(
    optimizer: torch.optim.Optimizer,
    step: int,
    total_steps: int,
    milestones: tuple[float, ...],
    *,
    gamma: float = 0.1,
) -> float:
    """Set every param group's lr to its ``initial_lr`` times the :func:`learning_rate` factor at ``step``.

    ``initial_lr`` (the key ``torch.optim.lr_scheduler`` uses) is stored on the first call, so groups built at
    different rates (:func:`make_sgd`'s localisation group) keep their ratio to the base rate. The lrs depend on
    ``step`` alone, not on earlier calls, so a resumed run gets the same rates. ``step`` and ``total_steps`` may
    count optimiser steps or epochs. Returns the factor.

    Example:
        >>> opt = make_sgd(model, lr=0.01, momentum=0.9, weight_decay=0.0, localization_lr_scale=0.1)
        >>> apply_lr_schedule(opt, 5_000, 10_000, (0.5, 0.75))
        0.1
        >>> [g["lr"] for g in opt.param_groups]  # doctest: +SKIP
        [0.001, 0.0001]
    """
    factor = learning_rate(step, total_steps, 1.0, milestones, gamma)
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
    return factor


def scheduled_step(
    loss: Tensor,
    optimizer: torch.optim.Optimizer,
    step: int,
    total_steps: int,
    milestones: tuple[float, ...],
    *,
    gamma: float = 0.1,
) -> None:
    """One optimisation step on the scalar ``loss`` at the learning rates of ``step`` (see
    :func:`apply_lr_schedule`): set the rates, clear the gradients, backpropagate, update.

    Example:
        >>> for step in range(budget.iterations):
        ...     loss = F.cross_entropy(model(x), y)
        ...     scheduled_step(loss, optimizer, step, budget.iterations, (2 / 3,))
    """
    apply_lr_schedule(optimizer, step, total_steps, milestones, gamma=gamma)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@torch.no_grad()
def evaluate(
    model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000, ctx: DistContext | None = None
) -> tuple[float, float]:
    """Mean cross-entropy and error rate of ``model`` on ``images (N, C, H, W)``, ``labels (N,)``.

    With a distributed ``ctx`` each process scores its share and the sums are combined.
    """
    ctx = ctx or DistContext()
    was_training = model.training
    model.eval()
    mine = torch.arange(ctx.rank, len(images), ctx.world_size, device=images.device)
    sums = torch.zeros(3, dtype=torch.float64, device=images.device)
    for idx in mine.split(batch_size):
        logits = model(images[idx]).float()
        y = labels[idx]
        sums += torch.stack(
            [
                F.cross_entropy(logits, y, reduction="sum").double(),
                (logits.argmax(1) != y).sum().double(),
                torch.tensor(len(idx), device=sums.device),
            ]
        )
    model.train(was_training)
    loss, wrong, count = all_reduce_sum(sums, ctx).tolist()
    return loss / max(count, 1), wrong / max(count, 1)


@dataclass
class TrainResult:
    """How :func:`train` ended: ``status`` is ``"finished"`` or ``"interrupted"`` (then ``signal`` is set)."""

    run_dir: Path
    status: str
    step: int
    total_steps: int
    summary: dict[str, Any] = field(default_factory=dict)
    signal: int | None = None
    is_main: bool = True  # False in the other processes of a data-parallel run

    @property
    def finished(self) -> bool:
        return self.status == "finished"


class _StopOnSignal:
    """Turns the first SIGINT / SIGTERM into a request to stop after the current step; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        tqdm.write(
            f"{signal.Signals(signum).name} received: saving a checkpoint after this step "
            "(Ctrl-C again aborts without saving)"
        )

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """One training run (see the module docstring); most users call :func:`train`.

    Args:
        config: the run's :class:`TrainConfig`.
        run_dir: its folder; must not hold another run's checkpoint unless ``resume``.
        resume: continue from ``run_dir/checkpoint.pt`` when it exists (start afresh when it does not).
        progress: show a tqdm progress bar and per-epoch lines.
        figures: write the PNG figures when training finishes.

    Raises:
        FileExistsError: ``run_dir`` holds a checkpoint and ``resume`` is false.
        CheckpointError: the checkpoint is corrupt or was made with another configuration.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        figures: bool = True,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.figures = figures
        self.device = resolve_device(config.device)
        if config.amp and self.device.type != "cuda":
            raise ValueError("mixed precision (amp) needs a CUDA device")
        self.ctx = init_distributed(self.device)
        if self.device.type == "cuda" and self.ctx.distributed:
            self.device = torch.device("cuda", self.ctx.local_rank)
            torch.cuda.set_device(self.device)
        if config.batch_size % self.ctx.world_size:
            raise ValueError(f"batch_size {config.batch_size} must divide evenly over {self.ctx.world_size} processes")

        self.train_set = DistortedMNIST(
            config.data,
            "train",
            root=config.data_dir,
            seed=config.seed,
            num_samples=config.num_train,
            download=config.download,
        )
        self.test_set = DistortedMNIST(
            config.data,
            "test",
            root=config.data_dir,
            seed=TEST_SEED,
            num_samples=config.num_test,
            download=config.download,
        )
        if len(self.train_set) < config.batch_size:
            raise ValueError(f"batch_size {config.batch_size} exceeds the {len(self.train_set)} training samples")
        self.steps_per_epoch = len(self.train_set) // config.batch_size
        self.total_steps = config.iterations or config.epochs * self.steps_per_epoch
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)

        info = self.train_set.info
        self.model_kwargs = {
            "in_shape": (info.channels, *info.image_size),
            "num_classes": info.num_classes,
            **config.model_options,
        }
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = create_model(config.model, **self.model_kwargs).to(self.device)
        if config.channels_last and len(self.model_kwargs["in_shape"]) == 3:
            self.model.to(memory_format=torch.channels_last)
        self.num_params = count_parameters(self.model)
        self.optimizer = make_sgd(
            self.model,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            localization_lr_scale=config.localization_lr_scale,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp)
        self.net = (
            DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
            if self.ctx.distributed
            else self.model
        )

        self.test_images, self.test_labels = self.test_set.epoch_tensors(0, self.device)
        self._check_model_output(info.num_classes)
        samples = self.test_images[: config.theta_samples].cpu().clone()  # not a view: saving it would save all
        self.step = 0
        self.epoch_sums = self._zero_sums()  # loss sum, wrong predictions, samples of the current epoch
        self.epoch_time = 0.0  # seconds in training steps, current epoch
        self.train_time = 0.0  # seconds in training steps, whole run
        self.elapsed = 0.0  # wall-clock seconds of the whole run (data, evaluation, checkpoints included)
        self._clock = time.perf_counter()
        self.history: list[dict[str, Any]] = []
        self.theta_history: dict[str, Any] = {"images": samples, "epochs": [], "theta": {}}
        self._restore(resume)

    def _check_model_output(self, num_classes: int) -> None:
        x = self.test_images[:1]
        with torch.no_grad():
            shape = tuple(self.model.eval()(x).shape)
        self.model.train()
        if shape != (1, num_classes):
            raise ValueError(
                f"model {self.config.model!r} returns {shape} for a {self.config.data!r} image, not the "
                f"(B, {num_classes}) logits this trainer needs"
            )

    def _tick(self) -> float:
        """Add the wall-clock time since the last call to ``elapsed`` and return it."""
        now = time.perf_counter()
        self.elapsed += now - self._clock
        self._clock = now
        return self.elapsed

    def _zero_sums(self) -> Tensor:
        return torch.zeros(3, dtype=torch.float64, device=self.device)

    # --- checkpoints ------------------------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    def _restore(self, resume: bool) -> None:
        if not self.checkpoint_path.exists():
            return
        if not resume:
            raise FileExistsError(
                f"{self.run_dir} already holds a run; pass --resume to continue it or choose another --out"
            )
        state = load_checkpoint(self.checkpoint_path, map_location=self.device)
        try:
            saved = TrainConfig.from_dict(state["config"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{self.checkpoint_path} holds an unreadable configuration: {err}") from err
        differences = saved.differences(self.config)
        if differences:
            listed = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differences.items())
            raise CheckpointError(f"cannot resume {self.checkpoint_path} with another configuration ({listed})")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{self.checkpoint_path} does not fit model {self.config.model!r}: {err}") from err
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.epoch_sums = state["epoch_sums"].to(self.device)
        self.epoch_time = state["epoch_time"]
        self.train_time = state["train_time"]
        self.elapsed = state["elapsed"]
        self.history = list(state["history"])
        self.theta_history = state["theta_history"]
        self.theta_history["images"] = self.theta_history["images"].clone()  # older checkpoints saved a view
        torch.set_rng_state(state["rng"].cpu())

    def _save(self, finished: bool = False) -> None:
        if not self.ctx.is_main:
            return
        save_checkpoint(
            {
                "config": self.config.to_dict(),
                "model_name": self.config.model,
                "model_kwargs": self.model_kwargs,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "step": self.step,
                "total_steps": self.total_steps,
                "epoch_sums": self.epoch_sums.cpu(),
                "epoch_time": self.epoch_time,
                "train_time": self.train_time,
                "elapsed": self._tick(),
                "history": self.history,
                "theta_history": self.theta_history,
                "rng": torch.get_rng_state(),
                "source": self.train_set.source,
                "finished": finished,
            },
            self.checkpoint_path,
        )

    # --- the loop ---------------------------------------------------------------------------------------------

    def _train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.config.amp):
            logits = self.net(x)
            loss = F.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        n = torch.tensor(len(y), device=y.device)
        return torch.stack([loss.detach() * n, (logits.argmax(1) != y).sum(), n]).double()

    def _set_lr(self) -> float:
        c = self.config
        return c.lr * apply_lr_schedule(self.optimizer, self.step, self.total_steps, c.lr_milestones, gamma=c.lr_gamma)

    def _record_thetas(self, epoch: int) -> None:
        samples = self.theta_history["images"]
        if len(samples) == 0:
            return
        captures = capture_transformers(self.model, samples.to(self.device))
        self.theta_history["epochs"].append(epoch)
        for name, capture in captures.items():
            theta = capture.theta.unsqueeze(0).cpu()
            old = self.theta_history["theta"].get(name)
            self.theta_history["theta"][name] = theta if old is None else torch.cat([old, theta])

    def _end_epoch(self, epoch: int, lr: float, log: MetricsLog) -> dict[str, Any]:
        c = self.config
        train_loss, train_wrong, seen = all_reduce_sum(self.epoch_sums, self.ctx).tolist()
        test_loss, test_error = evaluate(self.model, self.test_images, self.test_labels, c.eval_batch_size, self.ctx)
        record = {
            "epoch": epoch + 1,
            "step": self.step,
            "lr": lr,
            "train_loss": train_loss / max(seen, 1),
            "train_error": train_wrong / max(seen, 1),
            "test_loss": test_loss,
            "test_error": test_error,
            "images_per_s": seen / max(self.epoch_time, 1e-9),
            "epoch_time_s": self.epoch_time,
            "elapsed_s": self._tick(),
            **theta_diagnostics(self.model, self.test_images[:_DIAGNOSTIC_BATCH]),
        }
        self._record_thetas(epoch + 1)
        self.history.append(record)
        self.epoch_sums, self.epoch_time = self._zero_sums(), 0.0
        if self.ctx.is_main:
            log.append(record, step=self.step)
            if self.progress:
                tqdm.write(_epoch_line(record, self.num_epochs))
        return record

    def fit(self) -> TrainResult:
        """Train to ``total_steps`` (or until SIGINT / SIGTERM) and return how it ended."""
        try:
            return self._fit()
        finally:
            close_distributed(self.ctx)

    def _fit(self) -> TrainResult:
        c = self.config
        log = None
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.run_dir / "config.json", json.dumps(c.to_dict(), indent=2) + "\n")
            log = MetricsLog(self.run_dir, self.history, tensorboard=c.tensorboard)
        if not self.theta_history["epochs"]:
            self._record_thetas(0)
        per_rank = c.batch_size // self.ctx.world_size
        lo, hi = self.ctx.rank * per_rank, (self.ctx.rank + 1) * per_rank
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            desc=f"{c.model} on {c.data}",
            disable=not (self.progress and self.ctx.is_main),
        )
        try:
            with _StopOnSignal() as stop:
                while self.step < self.total_steps:
                    epoch = self.step // self.steps_per_epoch
                    images, labels = self.train_set.epoch_tensors(epoch, self.device)
                    order = torch.randperm(
                        len(images), generator=torch.Generator().manual_seed(block_seed("order", c.seed, epoch))
                    ).to(self.device)
                    last = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
                    lr = c.lr
                    for i in range(self.step - epoch * self.steps_per_epoch, last):
                        start = time.perf_counter()
                        lr = self._set_lr()
                        idx = order[i * c.batch_size : (i + 1) * c.batch_size][lo:hi]
                        self.epoch_sums += self._train_step(images[idx], labels[idx])
                        self.step += 1
                        took = time.perf_counter() - start
                        self.epoch_time += took
                        self.train_time += took
                        bar.update(1)
                        if self.step % _POSTFIX_EVERY == 0:
                            loss_sum, wrong, seen = self.epoch_sums.tolist()
                            bar.set_postfix(
                                epoch=f"{epoch + 1}/{self.num_epochs}",
                                loss=f"{loss_sum / seen:.3f}",
                                err=f"{100 * wrong / seen:.1f}%",
                                img_s=f"{seen * self.ctx.world_size / self.epoch_time:.0f}",
                            )
                        if any_process(stop.signum is not None, self.ctx, self.device):
                            self._save()
                            tqdm.write(
                                f"stopped at step {self.step}/{self.total_steps}; checkpoint saved to "
                                f"{self.checkpoint_path} (continue with --resume)"
                            )
                            return TrainResult(
                                self.run_dir,
                                "interrupted",
                                self.step,
                                self.total_steps,
                                signal=stop.signum or signal.SIGTERM,
                                is_main=self.ctx.is_main,
                            )
                    self._end_epoch(epoch, lr, log)
                    self._save(finished=self.step >= self.total_steps)
        finally:
            bar.close()
            if log is not None:
                log.close()
        summary = self._summary()
        if self.ctx.is_main:
            self._write_reports(summary)
        return TrainResult(self.run_dir, "finished", self.step, self.total_steps, summary, is_main=self.ctx.is_main)

    # --- reports ----------------------------------------------------------------------------------------------

    def _summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        return {
            "model": self.config.model,
            "data": self.config.data,
            "source": self.train_set.source,
            "seed": self.config.seed,
            "params": self.num_params,
            "steps": self.step,
            "epochs": len(self.history),
            "train_samples": len(self.train_set),
            "test_samples": len(self.test_set),
            "test_error": last.get("test_error"),
            "test_loss": last.get("test_loss"),
            "train_error": last.get("train_error"),
            "time_s": self._tick(),
            "images_per_s": self.step * self.config.batch_size / max(self.train_time, 1e-9),
        }

    def _write_reports(self, summary: dict[str, Any]) -> None:
        write_text_atomic(self.run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        if not self.history:
            return
        write_csv(self.history, self.run_dir / "metrics.csv")
        columns = ["epoch", "step", "lr", "train_loss", "train_error", "test_loss", "test_error", "images_per_s"]
        columns += [k for k in self.history[-1] if k.endswith((".scale_mean", ".outside_frac"))]
        facts = "\n".join(f"- {k}: {v}" for k, v in summary.items())
        table = format_markdown_table([[r.get(k) for k in columns] for r in self.history], columns)
        write_text_atomic(
            self.run_dir / "summary.md", f"# {self.config.model} on {self.config.data}\n\n{facts}\n\n{table}"
        )
        if self.figures:
            from stn import viz

            viz.plot_curves(
                self.history, self.run_dir / "curves.png", title=f"{self.config.model} on {self.config.data}"
            )
            if self.theta_history["theta"]:
                viz.plot_model_transformations(
                    self.model, self.theta_history["images"].to(self.device), self.run_dir / "transformations.png"
                )


def _epoch_line(record: dict[str, Any], num_epochs: int) -> str:
    line = (
        f"epoch {record['epoch']}/{num_epochs}  lr {record['lr']:.2g}  train loss {record['train_loss']:.4f} "
        f"err {100 * record['train_error']:.2f}%  test loss {record['test_loss']:.4f} "
        f"err {100 * record['test_error']:.2f}%  {record['images_per_s']:.0f} img/s"
    )
    for key, value in record.items():
        if key.endswith(".scale_mean"):
            line += f"  {key} {value:.2f}"
        elif key.endswith(".outside_frac"):
            line += f"  {key} {100 * value:.1f}%"
    return line


def train(
    config: TrainConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True, figures: bool = True
) -> TrainResult:
    """Train ``config`` in ``run_dir`` (see :class:`Trainer` for the arguments)."""
    return Trainer(config, run_dir, resume=resume, progress=progress, figures=figures).fit()
