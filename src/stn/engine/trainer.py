"""The training engine: one loop for every experiment and for a user's own model and data.

:class:`Trainer` takes a model built by :func:`stn.models.create_model`, a training and an evaluation dataset
(and optionally a validation one), a :class:`~stn.engine.tasks.Task` and a :class:`~stn.engine.config.TrainConfig`;
it builds neither model nor data. Its pieces live beside it: the optimiser and schedule (:mod:`stn.engine.optim`),
evaluation (:mod:`stn.engine.evaluation`), the run folder's rules (:mod:`stn.engine.rundir`), the checkpoint's schema
(:mod:`stn.engine.checkpoint`), the guards against non-finite and diverging losses (:mod:`stn.engine.guards`). The
schedule, AMP, DDP, the run folder and exact resume: docs/training.md.

Example:
    >>> import tempfile
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from stn.models import create_model
    >>> from stn.engine import ClassificationTask, TrainConfig, Trainer
    >>> data = TensorDataset(torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    >>> model = create_model("st-cnn-aff", in_shape=(1, 28, 28), target_params=20_000)
    >>> config = TrainConfig(iterations=4, batch_size=16, device="cpu")
    >>> trainer = Trainer(model, data, data, ClassificationTask(10), config, run_dir=tempfile.mkdtemp(),
    ...                   progress=False)
    >>> result = trainer.fit()
    >>> result.finished, result.step, 0 <= result.summary["test_error"] <= 1
    (True, 4, True)
"""

from __future__ import annotations

import math
import signal
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from stn.data.datasets import block_seed
from stn.engine.batches import first_samples, train_batches
from stn.engine.callbacks import Callback, default_callbacks
from stn.engine.checkpoint import (
    CHECKPOINT_FILE,
    RunRecord,
    load_checkpoint,
    restore_trainer,
    save_checkpoint,
    trainer_checkpoint,
)
from stn.engine.config import TrainConfig
from stn.engine.distributed import all_reduce_sum, any_processes, init_distributed, peer_lost, resolve_device
from stn.engine.evaluation import check_output, evaluate
from stn.engine.guards import NonFiniteGuard, divergence_warning
from stn.engine.metrics import POSTFIX_EVERY, MetricsLog, StepBar, epoch_line
from stn.engine.optim import apply_lr_schedule, make_optimizer, schedule_change
from stn.engine.rundir import (
    check_run_folder,
    check_same_run,
    checkpoint_to_resume,
    run_summary,
    write_run_config,
    write_summary,
)
from stn.engine.stopping import StopOnSignal, TrainResult
from stn.engine.tasks import Task
from stn.io import RunLock, remove_stale_temp_files
from stn.models.registry import model_spec

__all__ = ["Trainer"]


class Trainer:
    """One training run (see the module docstring).

    Args:
        model: built by :func:`stn.models.create_model` (the checkpoint records its name and arguments).
        train_data, eval_data: map-style datasets of ``(input, target)``, or sources with ``epoch_tensors``.
        task: the loss and metrics (:mod:`stn.engine.tasks`).
        config: the recipe.
        callbacks: what runs besides the loop (default :func:`~stn.engine.callbacks.default_callbacks`).
        run_dir: the run folder: new, empty, or an stn run (a non-empty folder of other files is refused unless
            ``force``); must not hold another run's checkpoint unless ``resume``.
        resume: continue from ``run_dir/checkpoint.pt`` when it exists (start afresh when it does not).
        data_spec: JSON-able description of the data (saved, compared on resume, used by ``stn eval`` to rebuild
            the evaluation set); ``{}`` for data only the caller knows.
        title: a name for progress lines and figures.
        progress: show a tqdm progress bar and per-epoch lines.
        command: the command line that trains the run, kept in ``summary.json`` so that a results folder says
            how each of its runs was made (a folder can gather runs of several commands).
        val_data: a validation set, scored like ``eval_data`` after every epoch: ``val_<metric>`` in each
            epoch's record; ``summary.json`` adds the last epoch's and the best epoch's (``best_val_<primary>``,
            ``best_val_epoch``). Nothing stops early on it.
        force: write into a non-empty folder that is not an stn run.

    The folder is locked (:class:`stn.io.RunLock`) from construction until :meth:`fit` returns.

    Raises:
        ValueError: a model not built by ``create_model``, an unknown device, a batch size that does not divide
            over the processes or exceeds the training set, or a model output the task cannot score.
        FileExistsError: ``run_dir`` holds a checkpoint and ``resume`` is false, or other files than a run's.
        CheckpointError: the checkpoint is corrupt or was made with another model, task, recipe or data.
        stn.io.RunLockedError: another process is writing ``run_dir``.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset,
        eval_data: Dataset,
        task: Task,
        config: TrainConfig,
        *,
        callbacks: Sequence[Callback] | None = None,
        run_dir: str | Path,
        resume: bool = False,
        data_spec: Mapping[str, Any] | None = None,
        title: str | None = None,
        progress: bool = True,
        command: str | None = None,
        val_data: Dataset | None = None,
        force: bool = False,
    ) -> None:
        spec = model_spec(model)
        if spec is None:
            raise ValueError(
                f"the Trainer needs a model built by stn.models.create_model (got a {type(model).__name__} built "
                "otherwise), so that its checkpoint can rebuild it; register your own with @register_model"
            )
        self.config, self.task, self.run_dir = config, task, Path(run_dir)
        self.train_data, self.eval_data, self.val_data = train_data, eval_data, val_data
        self.model_spec = spec
        self.data_spec = dict(data_spec or {})
        self.title = title or spec["name"]
        self.progress = progress
        self.command = command
        self.device = resolve_device(config.device)
        if config.amp and self.device.type != "cuda":
            raise ValueError("mixed precision (amp) needs a CUDA device")
        self.ctx = init_distributed(self.device)
        if self.device.type == "cuda" and self.ctx.distributed:
            self.device = torch.device("cuda", self.ctx.local_rank)
            torch.cuda.set_device(self.device)
        if config.batch_size % self.ctx.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} must divide evenly over the {self.ctx.world_size} processes"
            )
        self._lock = None
        if self.ctx.is_main:
            check_run_folder(self.run_dir, force=force)
            self._lock = RunLock(self.run_dir).acquire()  # first: a second process on the folder fails before any work
        try:
            self._build(model, callbacks, resume)
        except BaseException:
            self.close()
            raise

    def _build(self, model: nn.Module, callbacks: Sequence[Callback] | None, resume: bool) -> None:
        config, train_data, eval_data, val_data = self.config, self.train_data, self.eval_data, self.val_data
        if len(train_data) < config.batch_size:
            raise ValueError(f"batch_size {config.batch_size} exceeds the {len(train_data)} training samples")
        for name, data in (("evaluation", eval_data), ("validation", val_data)):
            if data is not None and len(data) == 0:
                raise ValueError(f"the {name} data is empty")
        self.steps_per_epoch = len(train_data) // config.batch_size
        self.total_steps = config.iterations or config.epochs * self.steps_per_epoch
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)

        self.model = model.to(self.device)
        if config.channels_last and all(p.dim() != 5 for p in model.parameters()):
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, config)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp)
        self.net = (
            DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
            if self.ctx.distributed
            else self.model
        )
        eager = self.device.type == "cpu" and not self.ctx.distributed  # reading the loss costs nothing there
        self.guard = NonFiniteGuard(config.on_nonfinite, self.device, config.lr, eager=eager)
        self.callbacks = list(default_callbacks() if callbacks is None else callbacks)
        self._eval_inputs: Tensor | None = None
        self._diverged = False  # the divergence warning was given
        self.input_shape = check_output(self.model, self.task, self.eval_data, self.device, self.model_spec["name"])
        self.step = 0
        self.epoch_sums = self._zero_sums()  # metric sums and sample count of the current epoch
        self.epoch_time = 0.0  # seconds in training steps, current epoch
        self.train_time = 0.0  # seconds in training steps, whole run
        self.elapsed = 0.0  # wall-clock seconds of the whole run (data, evaluation, checkpoints included)
        self._clock = time.perf_counter()
        self.history: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}  # what summary.json holds, once fit has finished
        self._restore(resume)

    # --- pieces -----------------------------------------------------------------------------------------------

    def eval_inputs(self, count: int) -> Tensor:
        """The first ``count`` evaluation inputs, on the device (cached)."""
        if self._eval_inputs is None or len(self._eval_inputs) < min(count, len(self.eval_data)):
            self._eval_inputs = first_samples(self.eval_data, max(count, 1), self.device)[0]
        return self._eval_inputs[:count]

    def _zero_sums(self) -> Tensor:
        return torch.zeros(len(self.task.metrics) + 1, dtype=torch.float64, device=self.device)

    def _tick(self) -> float:
        """Add the wall-clock time since the last call to ``elapsed`` and return it."""
        now = time.perf_counter()
        self.elapsed += now - self._clock
        self._clock = now
        return self.elapsed

    def _evaluate(self, data: Dataset) -> dict[str, float]:
        c = self.config
        return evaluate(
            self.model, data, self.task, batch_size=c.eval_batch_size, device=self.device, ctx=self.ctx,
            num_workers=c.num_workers,
        )  # fmt: skip

    # --- checkpoints ------------------------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    def record(self) -> RunRecord:
        """What this run is (:class:`~stn.engine.checkpoint.RunRecord`): model, task, data, recipe."""
        spec, source = self.model_spec, getattr(self.train_data, "source", None)
        return RunRecord(
            spec["name"], spec["kwargs"], self.task.spec(), self.data_spec, self.config.to_dict(), self.input_shape,
            source,
        )  # fmt: skip

    def _restore(self, resume: bool) -> None:
        path = checkpoint_to_resume(self.run_dir, resume)
        if path is None:
            return
        state = load_checkpoint(path, map_location=self.device)
        check_same_run(path, state, self.record())
        was = restore_trainer(self, state, path).total_steps
        if was not in (None, self.total_steps) and self.step < self.total_steps and self.ctx.is_main:
            tqdm.write(f"{self.title}: {schedule_change(self.config, self.step, was, self.total_steps)}")

    def _save(self, finished: bool = False) -> None:
        """Write the checkpoint, from finite weights only (else stop as the guard's policy says)."""
        self.guard.look()
        self.guard.check_weights(self.step, self.model.state_dict().values())
        if self.ctx.is_main:
            save_checkpoint(trainer_checkpoint(self, finished=finished, elapsed=self._tick()), self.checkpoint_path)

    # --- the loop ---------------------------------------------------------------------------------------------

    def train_step(self, x: Tensor, y: Tensor) -> Tensor:
        """One optimiser step on a batch; returns the float64 metric sums and the sample count (zeros for a batch
        whose step the guard skipped)."""
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.config.amp):
            loss, sums = self.task.evaluate(self.net(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad_norm)
        skipping = self.guard.policy == "skip" and not self.config.amp  # AMP's scaler skips overflowing gradients
        grads = [p.grad for p in self.model.parameters() if p.grad is not None] if skipping else []
        if not self.guard.check(self.step, loss, grads):
            self.scaler.update()
            return self._zero_sums()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return torch.cat([sums.detach(), sums.new_tensor([len(y)])])

    def _poll(self, signalled: bool) -> bool:
        """After each step: whether any process was asked to stop. Raises (the guard's policy) for a non-finite loss
        seen by any process; outside a data-parallel run a GPU's guard is read every few steps only."""
        if self.ctx.distributed:
            signalled, bad = any_processes([signalled, self.guard.flag()], self.ctx, self.device)
            if bad:
                self.guard.look(self.step - 1)
        elif self.step % POSTFIX_EVERY == 0 and not self.guard.eager:
            self.guard.look()
        return signalled

    def _end_epoch(self, epoch: int, lr: float, log: MetricsLog | None) -> dict[str, Any]:
        *train_sums, seen = all_reduce_sum(self.epoch_sums, self.ctx).tolist()
        record: dict[str, Any] = {"epoch": epoch + 1, "step": self.step, "lr": lr}
        record |= {f"train_{m}": s / max(seen, 1) for m, s in zip(self.task.metrics, train_sums)}
        record |= {f"test_{m}": v for m, v in self._evaluate(self.eval_data).items()}
        if self.val_data is not None:
            record |= {f"val_{m}": v for m, v in self._evaluate(self.val_data).items()}
        record |= self.guard.end_epoch(epoch + 1)
        record |= {
            "images_per_s": seen / max(self.epoch_time, 1e-9),
            "epoch_time_s": self.epoch_time,
            "elapsed_s": self._tick(),
        }
        for callback in self.callbacks:
            callback.on_epoch_end(self, record)
        self.history.append(record)
        self.epoch_sums, self.epoch_time = self._zero_sums(), 0.0
        if log is not None:
            log.append(record, step=self.step)
            if self.progress:
                tqdm.write(epoch_line(record, self.task.metrics, self.num_epochs))
            diverges = not self._diverged and divergence_warning(self.history, self.task.chance_loss, self.config.lr)
            if diverges:  # said once
                self._diverged = True
                warnings.warn(f"{self.title}: {diverges}", RuntimeWarning, stacklevel=2)
        return record

    def fit(self) -> TrainResult:
        """Train to ``total_steps`` (or until SIGINT / SIGTERM) and return how it ended; then :meth:`close`.

        Raises:
            stn.engine.guards.NonFiniteError: a non-finite loss with ``on_nonfinite="stop"`` (or too many skipped);
                the checkpoint on disk is the last one with finite weights.
            stn.engine.distributed.PeerLostError: another process of a data-parallel run died.
            OSError: the checkpoint cannot be written (a full disk is said so; the previous one stays).
        """
        try:
            return self._fit()
        except RuntimeError as err:
            lost = peer_lost(err, self.ctx)
            if lost is None:
                raise
            raise lost from None
        finally:
            self.close()

    def close(self) -> None:
        """Release the run folder (what :meth:`fit` does when it returns). The process group stays: an experiment
        may train several models one after another in the same torchrun job."""
        if self._lock is not None:
            self._lock.release()

    def _fit(self) -> TrainResult:
        c = self.config
        log = None
        if self.ctx.is_main:
            remove_stale_temp_files(self.run_dir)
            write_run_config(self.run_dir, self.record())
            log = MetricsLog(self.run_dir, self.history, tensorboard=c.tensorboard)
        if self.step == 0 and not self.history:  # a fresh run: dropout & co. draw from the seed (resume restores)
            torch.manual_seed(block_seed("train", c.seed))
        for callback in self.callbacks:
            callback.on_fit_start(self)
        bar = StepBar(self.total_steps, self.step, self.title, enabled=self.progress and self.ctx.is_main)
        interrupted = False
        try:
            with StopOnSignal() as stop:
                while self.step < self.total_steps and not interrupted:
                    epoch = self.step // self.steps_per_epoch
                    first = self.step - epoch * self.steps_per_epoch
                    last = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
                    lr, shown = c.lr, f"{epoch + 1}/{self.num_epochs}"
                    batches = train_batches(
                        self.train_data, c.batch_size, c.seed, epoch, first, last, self.ctx, self.device,
                        c.num_workers, prefetch=epoch + 1 < self.num_epochs,
                    )  # fmt: skip
                    for x, y in batches:
                        start = time.perf_counter()
                        lr = c.lr * apply_lr_schedule(
                            self.optimizer, self.step, self.total_steps, c.lr_milestones, gamma=c.lr_gamma,
                            schedule=c.schedule, warmup=c.warmup,
                        )  # fmt: skip
                        self.epoch_sums += self.train_step(x, y)
                        self.step += 1
                        took = time.perf_counter() - start
                        self.epoch_time += took
                        self.train_time += took
                        bar.update(self.step, shown, self.epoch_sums, self.epoch_time, self.ctx.world_size)
                        interrupted = self._poll(stop.signum is not None)
                        if interrupted:
                            break
                    if self.step == epoch * self.steps_per_epoch + last:  # the epoch is complete
                        self._end_epoch(epoch, lr, log)
                    self._save(finished=self.step >= self.total_steps)
        finally:
            bar.close()
            if log is not None:
                log.close()
        if interrupted:
            if self.ctx.is_main:
                tqdm.write(
                    f"stopped at step {self.step}/{self.total_steps}; checkpoint saved to {self.checkpoint_path} "
                    "(continue with --resume)"
                )
            signum = stop.signum or signal.SIGTERM
            return TrainResult(
                self.run_dir, "interrupted", self.step, self.total_steps, signal=signum, is_main=self.ctx.is_main
            )
        self.summary = summary = run_summary(self, elapsed=self._tick())
        if self.ctx.is_main:
            write_summary(self.run_dir, summary)
            for callback in self.callbacks:
                callback.on_fit_end(self, summary)
        return TrainResult(self.run_dir, "finished", self.step, self.total_steps, summary, is_main=self.ctx.is_main)
