"""The training engine: one loop for every experiment and for a user's own model and data.

:class:`Trainer` takes a model built by :func:`stn.models.create_model`, a training and an evaluation dataset,
a :class:`~stn.engine.tasks.Task` and a :class:`~stn.engine.config.TrainConfig`; it builds neither model nor
data. The schedule, AMP, DDP, the run folder and exact resume: docs/training.md. :func:`run_status` is the one
rule for "already done / resume / refuse".

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

import json
import math
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from stn.data.datasets import block_seed
from stn.data.specs import spec_differences
from stn.engine.callbacks import Callback, default_callbacks
from stn.engine.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint, save_checkpoint
from stn.engine.config import RESUMABLE_FIELDS, TrainConfig
from stn.engine.distributed import DistContext, all_reduce_sum, any_process, init_distributed
from stn.engine.metrics import MetricsLog
from stn.engine.tasks import Task
from stn.io import RunLock, remove_stale_temp_files, write_text_atomic
from stn.models.registry import model_spec
from stn.modules import param_groups

__all__ = [
    "CONFIG_FILE",
    "SUMMARY_FILE",
    "TrainResult",
    "Trainer",
    "apply_lr_schedule",
    "evaluate",
    "learning_rate",
    "make_optimizer",
    "read_run_config",
    "read_summary",
    "resolve_device",
    "run_status",
]

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
_POSTFIX_EVERY = 10  # steps between progress-bar updates (each reads values back from the device)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise ``torch.device(name)`` (checked to exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu or auto")
    return device


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The config's optimiser (SGD with momentum, or Adam) over :func:`stn.param_groups`: localisation nets at
    ``lr * localization_lr_scale``, the rest at ``lr``."""
    c = config
    groups = param_groups(model, c.lr, c.localization_lr_scale)
    if c.optimizer == "adam":
        return torch.optim.Adam(groups, lr=c.lr, weight_decay=c.weight_decay)
    return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=c.nesterov)


def learning_rate(
    step: int,
    total_steps: int,
    base_lr: float,
    milestones: tuple[float, ...],
    gamma: float,
    *,
    schedule: str = "step",
    warmup: float = 0.0,
) -> float:
    """The learning rate at ``step`` (counted from 0) of ``total_steps``.

    ``schedule="step"`` (the paper's): ``base_lr * gamma ** k`` after ``k`` of the ``milestones`` (fractions of
    ``total_steps``). ``schedule="cosine"``: ``base_lr * (1 + cos(pi * step / total_steps)) / 2``. Either is
    multiplied by a linear warm-up ``min(1, (step + 1) / W)`` over the first ``W = round(warmup * total_steps)``
    steps.

    Example:
        >>> [round(learning_rate(s, 150_000, 0.01, (1 / 3, 2 / 3), 0.1), 6) for s in (0, 50_000, 100_000)]
        [0.01, 0.001, 0.0001]
        >>> [round(learning_rate(s, 100, 0.1, (), 0.1, schedule="cosine", warmup=0.1), 4) for s in (0, 9, 50, 99)]
        [0.01, 0.098, 0.05, 0.0]
    """
    if schedule == "cosine":
        rate = base_lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
    elif schedule == "step":
        rate = base_lr * gamma ** sum(step >= round(m * total_steps) for m in milestones)
    else:
        raise ValueError(f"schedule must be 'step' or 'cosine', got {schedule!r}")
    warm = round(warmup * total_steps)
    return rate * min(1.0, (step + 1) / warm) if warm > 0 else rate


def apply_lr_schedule(
    optimizer: torch.optim.Optimizer,
    step: int,
    total_steps: int,
    milestones: tuple[float, ...],
    *,
    gamma: float = 0.1,
    schedule: str = "step",
    warmup: float = 0.0,
) -> float:
    """Set every param group's lr to its ``initial_lr`` times the :func:`learning_rate` factor at ``step``.

    ``initial_lr`` (the key ``torch.optim.lr_scheduler`` uses) is stored on the first call, so groups built at
    different rates (:func:`make_optimizer`'s localisation group) keep their ratio to the base rate. The lrs depend on
    ``step`` alone, not on earlier calls, so a resumed run gets the same rates. Returns the factor.

    Example:
        >>> from stn.models import create_model
        >>> model = create_model("st-cnn-aff", in_shape=(1, 28, 28), target_params=20_000)
        >>> opt = make_optimizer(model, TrainConfig(lr=0.01, localization_lr_scale=0.1))
        >>> apply_lr_schedule(opt, 5_000, 10_000, (0.5, 0.75))
        0.1
        >>> [round(g["lr"], 6) for g in opt.param_groups]
        [0.001, 0.0001]
    """
    factor = learning_rate(step, total_steps, 1.0, milestones, gamma, schedule=schedule, warmup=warmup)
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
    return factor


# --- data ----------------------------------------------------------------------------------------------------


def _has_epoch_tensors(data: Any) -> bool:
    return callable(getattr(data, "epoch_tensors", None))


def _to(batch: Any, device: torch.device) -> Any:
    return batch.to(device, non_blocking=True) if isinstance(batch, Tensor) else batch


def _eval_batches(
    data: Dataset, batch_size: int, device: torch.device, ctx: DistContext, num_workers: int = 0
) -> Iterator[tuple[Tensor, Tensor]]:
    """This process's share (every ``world_size``-th sample) of ``data`` in batches, on ``device``."""
    if _has_epoch_tensors(data):
        inputs, targets = data.epoch_tensors(0, device)
        mine = torch.arange(ctx.rank, len(inputs), ctx.world_size, device=inputs.device)
        for idx in mine.split(batch_size):
            yield inputs[idx], targets[idx]
        return
    share = Subset(data, range(ctx.rank, len(data), ctx.world_size))
    loader = DataLoader(
        share,
        batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),  # not the global RNG: evaluating must not change training
    )
    for x, y in loader:
        yield _to(x, device), _to(y, device)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset,
    task: Task,
    *,
    batch_size: int = 1000,
    device: torch.device | str | None = None,
    ctx: DistContext | None = None,
    num_workers: int = 0,
) -> dict[str, float]:
    """Every metric of ``task`` (``{"loss": ..., "error": ...}``) of ``model`` on ``data``, averaged over samples.

    ``data`` is any map-style dataset of ``(input, target)`` (or one with ``epoch_tensors``). With a distributed
    ``ctx`` each process scores its share and the sums are combined.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from stn.engine.tasks import ClassificationTask
        >>> data = TensorDataset(torch.eye(4), torch.tensor([0, 1, 2, 0]))
        >>> evaluate(nn.Identity(), data, ClassificationTask(4))["error"]
        0.25
    """
    ctx = ctx or DistContext()
    device = torch.device(device) if device is not None else next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(task.metrics) + 1, dtype=torch.float64, device=device)
    for x, y in _eval_batches(data, batch_size, device, ctx, num_workers):
        _, batch = task.evaluate(model(x), y)
        sums += torch.cat([batch, batch.new_tensor([len(y)])])
    model.train(was_training)
    *totals, count = all_reduce_sum(sums, ctx).tolist()
    return {name: total / max(count, 1) for name, total in zip(task.metrics, totals)}


# --- the run folder ------------------------------------------------------------------------------------------


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a run folder: ``{"config", "model", "task", "data"}``.

    Raises:
        FileNotFoundError: no ``config.json`` there.
        ValueError: it is damaged (the message names the file).
    """
    path = Path(run_dir) / CONFIG_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        TrainConfig.from_dict(saved["config"])
    except FileNotFoundError:
        raise FileNotFoundError(f"no run in {run_dir}: {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is damaged: not valid JSON ({err}); fix or delete it, or use another folder"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is damaged ({err}); fix or delete it, or use another folder") from None
    return saved


def run_status(
    run_dir: str | Path,
    config: TrainConfig,
    data_spec: Mapping[str, Any] | None = None,
    model_options: Mapping[str, Any] | None = None,
) -> str:
    """The one rule for a run folder: ``"new"`` (neither a checkpoint nor a finished run), ``"done"`` (a finished
    run, its ``summary.json``, of the same recipe, data, length and ``model_options``, the factory arguments the
    caller chose: nothing to do) or ``"resume"`` (anything else; the :class:`Trainer` then refuses, with
    :class:`CheckpointError`, a checkpoint made with another model, task, recipe or data, and with
    ``FileExistsError`` a finished run whose checkpoint is gone).

    A finished run stays ``"done"`` without its ``checkpoint.pt`` (the results folders in git keep none), so
    running a results command again never retrains and overwrites it. ``config.json`` is read, so a damaged one
    raises ``ValueError`` naming it.
    """
    run_dir = Path(run_dir)
    if not (run_dir / SUMMARY_FILE).is_file():
        return "resume" if (run_dir / CHECKPOINT_FILE).is_file() else "new"
    saved = read_run_config(run_dir)
    same_recipe = not TrainConfig.from_dict(saved["config"]).differences(
        config, ignore=RESUMABLE_FIELDS - {"epochs", "iterations"}
    )
    same_data = data_spec is None or not spec_differences(saved.get("data", {}), data_spec)
    kwargs = saved["model"]["kwargs"]
    same_model = all(k in kwargs and kwargs[k] == v for k, v in (model_options or {}).items())
    return "done" if same_recipe and same_data and same_model else "resume"


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The ``summary.json`` a finished run wrote."""
    return json.loads((Path(run_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))


@dataclass
class TrainResult:
    """How :meth:`Trainer.fit` ended: ``status`` is ``"finished"`` or ``"interrupted"`` (then ``signal`` is set)."""

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
    """One training run (see the module docstring).

    Args:
        model: built by :func:`stn.models.create_model` (the checkpoint records its name and arguments).
        train_data, eval_data: map-style datasets of ``(input, target)``, or sources with ``epoch_tensors``.
        task: the loss and metrics (:mod:`stn.engine.tasks`).
        config: the recipe.
        callbacks: what runs besides the loop (default :func:`~stn.engine.callbacks.default_callbacks`).
        run_dir: the run folder; must not hold another run's checkpoint unless ``resume``.
        resume: continue from ``run_dir/checkpoint.pt`` when it exists (start afresh when it does not).
        data_spec: JSON-able description of the data (saved, compared on resume, used by ``stn eval`` to rebuild
            the evaluation set); ``{}`` for data only the caller knows.
        title: a name for progress lines and figures.
        progress: show a tqdm progress bar and per-epoch lines.
        command: the command line that trains the run, kept in ``summary.json`` so that a results folder says
            how each of its runs was made (a folder can gather runs of several commands).

    The folder is locked (:class:`stn.io.RunLock`) from construction until :meth:`fit` returns.

    Raises:
        ValueError: a model not built by ``create_model``, a batch size that does not divide over the processes
            or exceeds the training set, or a model output the task cannot score.
        FileExistsError: ``run_dir`` holds a checkpoint and ``resume`` is false.
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
    ) -> None:
        spec = model_spec(model)
        if spec is None:
            raise ValueError(
                f"the Trainer needs a model built by stn.models.create_model (got a {type(model).__name__} built "
                "otherwise), so that its checkpoint can rebuild it; register your own with @register_model"
            )
        self.config, self.task, self.run_dir = config, task, Path(run_dir)
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
        self._lock = RunLock(self.run_dir) if self.ctx.is_main else None
        if self._lock is not None:
            self._lock.acquire()  # first: a second process on the folder fails before any work
        try:
            self._build(model, train_data, eval_data, callbacks, resume)
        except BaseException:
            self.close()
            raise

    def _build(
        self,
        model: nn.Module,
        train_data: Dataset,
        eval_data: Dataset,
        callbacks: Sequence[Callback] | None,
        resume: bool,
    ) -> None:
        config = self.config
        self.train_data, self.eval_data = train_data, eval_data
        if len(train_data) < config.batch_size:
            raise ValueError(f"batch_size {config.batch_size} exceeds the {len(train_data)} training samples")
        if len(eval_data) == 0:
            raise ValueError("the evaluation data is empty")
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
        self.callbacks = list(default_callbacks() if callbacks is None else callbacks)
        self._eval_inputs: Tensor | None = None
        self.input_shape = self._check_output()
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
            self._eval_inputs = self._eval_samples(max(count, 1))[0]
        return self._eval_inputs[:count]

    def _eval_samples(self, count: int) -> tuple[Tensor, Tensor]:
        """The first ``count`` evaluation inputs and targets, on the device."""
        n = min(count, len(self.eval_data))
        if _has_epoch_tensors(self.eval_data):
            inputs, targets = self.eval_data.epoch_tensors(0, self.device)
            return inputs[:n], targets[:n]
        inputs, targets = zip(*(self.eval_data[i] for i in range(n)))
        return torch.stack(inputs).to(self.device), torch.stack([torch.as_tensor(t) for t in targets]).to(self.device)

    def _check_output(self) -> tuple[int, ...]:
        """Run the model on two evaluation samples and let the task check the output; returns the input shape."""
        x, y = self._eval_samples(2)
        with torch.no_grad():
            out = self.model.eval()(x)
        self.model.train()
        if not isinstance(out, Tensor):
            raise ValueError(f"model {self.model_spec['name']!r} must return one tensor, got {type(out).__name__}")
        try:
            self.task.check_output(out, y)
        except ValueError as err:
            raise ValueError(f"model {self.model_spec['name']!r} does not fit the data: {err}") from None
        return tuple(x.shape[1:])

    def _zero_sums(self) -> Tensor:
        return torch.zeros(len(self.task.metrics) + 1, dtype=torch.float64, device=self.device)

    def _tick(self) -> float:
        """Add the wall-clock time since the last call to ``elapsed`` and return it."""
        now = time.perf_counter()
        self.elapsed += now - self._clock
        self._clock = now
        return self.elapsed

    # --- checkpoints ------------------------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    def _run_config(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "model": self.model_spec,
            "task": self.task.spec(),
            "data": self.data_spec,
        }

    def _restore(self, resume: bool) -> None:
        if not self.checkpoint_path.exists():
            if (self.run_dir / SUMMARY_FILE).is_file():  # a finished run kept without its checkpoint (results/)
                raise FileExistsError(
                    f"{self.run_dir} holds a finished run whose {CHECKPOINT_FILE} is gone, so it can be neither "
                    "continued nor replaced in place; choose another --out, or delete the folder to train it afresh"
                )
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
        was = {"model": (state["model_name"], state["model_kwargs"]), "task": state.get("task")}
        now = {"model": (self.model_spec["name"], self.model_spec["kwargs"]), "task": self.task.spec()}
        differences |= {key: (was[key], now[key]) for key in now if was[key] != now[key]}
        differences |= {f"data.{k}": v for k, v in spec_differences(state.get("data", {}), self.data_spec).items()}
        if differences:
            listed = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differences.items())
            raise CheckpointError(f"cannot resume {self.checkpoint_path} with another configuration ({listed})")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{self.checkpoint_path} does not fit the model: {err}") from err
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.epoch_sums = state["epoch_sums"].to(self.device)
        self.epoch_time, self.train_time, self.elapsed = state["epoch_time"], state["train_time"], state["elapsed"]
        self.history = list(state["history"])
        for callback in self.callbacks:
            if callback.key is not None and callback.key in state:
                callback.load_state_dict(state[callback.key])
        torch.set_rng_state(state["rng"]["cpu"].cpu())
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)

    def _save(self, finished: bool = False) -> None:
        if not self.ctx.is_main:
            return
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        state = {
            "config": self.config.to_dict(),
            "model_name": self.model_spec["name"],
            "model_kwargs": self.model_spec["kwargs"],
            "model": self.model.state_dict(),
            "input_shape": self.input_shape,
            "task": self.task.spec(),
            "data": self.data_spec,
            "source": getattr(self.train_data, "source", None),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
            "epoch_sums": self.epoch_sums.cpu(),
            "epoch_time": self.epoch_time,
            "train_time": self.train_time,
            "elapsed": self._tick(),
            "history": self.history,
            "rng": rng,
            "finished": finished,
        }
        for callback in self.callbacks:
            if callback.key is not None:
                state[callback.key] = callback.state_dict()
        save_checkpoint(state, self.checkpoint_path)

    # --- the loop ---------------------------------------------------------------------------------------------

    def train_step(self, x: Tensor, y: Tensor) -> Tensor:
        """One optimiser step on a batch; returns the float64 metric sums and the sample count."""
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.config.amp):
            loss, sums = self.task.evaluate(self.net(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return torch.cat([sums.detach(), sums.new_tensor([len(y)])])

    def _train_batches(self, epoch: int, first: int, last: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches ``first`` to ``last - 1`` of ``epoch``: this process's slice of each global batch."""
        c = self.config
        per_rank = c.batch_size // self.ctx.world_size
        lo, hi = self.ctx.rank * per_rank, (self.ctx.rank + 1) * per_rank
        generator = torch.Generator().manual_seed(block_seed("order", c.seed, epoch))
        order = torch.randperm(len(self.train_data), generator=generator)
        if _has_epoch_tensors(self.train_data):
            inputs, targets = self.train_data.epoch_tensors(epoch, self.device)
            order = order.to(self.device)
            for i in range(first, last):
                idx = order[i * c.batch_size : (i + 1) * c.batch_size][lo:hi]
                yield inputs[idx], targets[idx]
            return
        set_epoch = getattr(self.train_data, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        batches = [order[i * c.batch_size : (i + 1) * c.batch_size][lo:hi].tolist() for i in range(first, last)]
        loader = DataLoader(
            self.train_data,
            batch_sampler=batches,
            num_workers=c.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=generator,  # the workers' seeds; the global RNG (dropout...) stays the model's alone
        )
        for x, y in loader:
            yield _to(x, self.device), _to(y, self.device)

    def _end_epoch(self, epoch: int, lr: float, log: MetricsLog | None) -> dict[str, Any]:
        c = self.config
        *train_sums, seen = all_reduce_sum(self.epoch_sums, self.ctx).tolist()
        test = evaluate(
            self.model,
            self.eval_data,
            self.task,
            batch_size=c.eval_batch_size,
            device=self.device,
            ctx=self.ctx,
            num_workers=c.num_workers,
        )
        record: dict[str, Any] = {"epoch": epoch + 1, "step": self.step, "lr": lr}
        record |= {f"train_{m}": s / max(seen, 1) for m, s in zip(self.task.metrics, train_sums)}
        record |= {f"test_{m}": v for m, v in test.items()}
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
                tqdm.write(self._epoch_line(record))
        return record

    def fit(self) -> TrainResult:
        """Train to ``total_steps`` (or until SIGINT / SIGTERM) and return how it ended; then :meth:`close`."""
        try:
            return self._fit()
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
            write_text_atomic(self.run_dir / CONFIG_FILE, json.dumps(self._run_config(), indent=2) + "\n")
            log = MetricsLog(self.run_dir, self.history, tensorboard=c.tensorboard)
        if self.step == 0 and not self.history:  # a fresh run: dropout & co. draw from the seed (resume restores)
            torch.manual_seed(block_seed("train", c.seed))
        for callback in self.callbacks:
            callback.on_fit_start(self)
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            desc=self.title,
            disable=not (self.progress and self.ctx.is_main),
        )
        interrupted = False
        try:
            with _StopOnSignal() as stop:
                while self.step < self.total_steps and not interrupted:
                    epoch = self.step // self.steps_per_epoch
                    first = self.step - epoch * self.steps_per_epoch
                    last = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
                    lr = c.lr
                    for x, y in self._train_batches(epoch, first, last):
                        start = time.perf_counter()
                        factor = apply_lr_schedule(
                            self.optimizer,
                            self.step,
                            self.total_steps,
                            c.lr_milestones,
                            gamma=c.lr_gamma,
                            schedule=c.schedule,
                            warmup=c.warmup,
                        )
                        lr = c.lr * factor
                        self.epoch_sums += self.train_step(x, y)
                        self.step += 1
                        took = time.perf_counter() - start
                        self.epoch_time += took
                        self.train_time += took
                        bar.update(1)
                        if self.step % _POSTFIX_EVERY == 0 and not bar.disable:
                            *sums, seen = self.epoch_sums.tolist()
                            bar.set_postfix(
                                epoch=f"{epoch + 1}/{self.num_epochs}",
                                loss=f"{sums[0] / seen:.3f}",
                                img_s=f"{seen * self.ctx.world_size / self.epoch_time:.0f}",
                            )
                        interrupted = any_process(stop.signum is not None, self.ctx, self.device)
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
        self.summary = summary = self._summary()
        if self.ctx.is_main:
            write_text_atomic(self.run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
            for callback in self.callbacks:
                callback.on_fit_end(self, summary)
        return TrainResult(self.run_dir, "finished", self.step, self.total_steps, summary, is_main=self.ctx.is_main)

    # --- reports ----------------------------------------------------------------------------------------------

    def _summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        return {
            "title": self.title,
            "model": self.model_spec["name"],
            "data": self.data_spec,
            "source": getattr(self.train_data, "source", None),
            "task": self.task.name,
            "primary": self.task.primary,
            "seed": self.config.seed,
            "params": sum(p.numel() for p in self.model.parameters()),
            "steps": self.step,
            "epochs": len(self.history),
            "train_samples": len(self.train_data),
            "test_samples": len(self.eval_data),
            **{f"test_{m}": last.get(f"test_{m}") for m in self.task.metrics},
            **{f"train_{m}": last.get(f"train_{m}") for m in self.task.metrics},
            "time_s": self._tick(),
            "images_per_s": self.step * self.config.batch_size / max(self.train_time, 1e-9),
            "command": self.command,
        }

    def _epoch_line(self, record: dict[str, Any]) -> str:
        parts = [f"epoch {record['epoch']}/{self.num_epochs}", f"lr {record['lr']:.2g}"]
        for split in ("train", "test"):
            for m in self.task.metrics:
                value = record[f"{split}_{m}"]
                parts.append(f"{split} {m} {value:.4f}" if m == "loss" else f"{split} {m} {100 * value:.2f}%")
        parts.append(f"{record['images_per_s']:.0f} img/s")
        for key, value in record.items():
            if key.endswith(".scale_mean"):
                parts.append(f"{key} {value:.2f}")
            elif key.endswith((".outside_frac", ".nonfinite_frac")) and (value or key.endswith("outside_frac")):
                parts.append(f"{key} {100 * value:.1f}%")
        return "  ".join(parts)
