"""Training and timing helpers shared by every spec.

``make_trainer`` builds a ``lightning.Trainer`` with the run's hardware and scale-out
settings, the harness callbacks (a non-finite loss stops the unit with a reason), a
progress bar, and loggers that write the unit's training curves under the run folder
(``logs/<unit>/<fit>/``: CSVLogger's ``metrics.csv``, plus TensorBoard event files when
``tensorboard`` is installed). ``median_time`` and ``eval_throughput`` measure efficiency
with warm-up and medians.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

from benchmarks.unit import DEV_STEPS, FAST_DEV_BATCHES, NonFiniteLossError, UnitContext, reset_step_peak, step_peak_mb


class FiniteLossCheck(L.Callback):
    """Stop with :class:`NonFiniteLossError` at the first NaN/inf training loss."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(torch.as_tensor(loss)).all():
            raise NonFiniteLossError(
                f"training loss is {float(torch.as_tensor(loss).detach().float().mean())} "
                f"at step {trainer.global_step} (epoch {trainer.current_epoch}, batch {batch_idx})"
            )


class StepTimer(L.Callback):
    """Wall time between consecutive training-batch starts: one full loop iteration,
    including data fetch, hooks and logging, i.e. what a user waits for."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())

    @property
    def step_times(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:])]


def batch_size_of(batch: Any) -> int | None:
    """The leading dimension of the first tensor in a batch (a tensor, a tuple/list or a dict of them)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else None
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        n = batch_size_of(item)
        if n is not None:
            return n
    return None


@contextlib.contextmanager
def dev_step(model: torch.nn.Module | int, what: str, batch: int | None = None):
    """Measure one step of a custom loop (a federated round, a sampler step, an encoding pass) for a fast dev run's
    table: its wall time and peak memory (:func:`benchmarks.unit.reset_step_peak`), with ``model``'s parameter count
    (or a count given directly) and the batch it processed. Appends to ``benchmarks.unit.DEV_STEPS``."""
    params = model if isinstance(model, int) else count_trainable(model)
    reset_step_peak()
    start = time.perf_counter()
    yield
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak, memory = step_peak_mb()
    DEV_STEPS.append({"what": what, "params": params, "batch": batch, "step_s": seconds, "peak_mb": peak, "memory": memory})


class DevProbe(L.Callback):
    """A fast dev run's measurement of each training step of a fit: the module's parameter count, the batch size,
    the step's wall time (batch start to batch end: forward, backward, optimiser step) and its peak memory."""

    def __init__(self, what: str = "train step") -> None:
        self.what = what
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        reset_step_peak()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self._start
        peak, memory = step_peak_mb()
        DEV_STEPS.append({"what": f"{self.what} ({type(pl_module).__name__})", "params": count_trainable(pl_module),
                          "batch": batch_size_of(batch), "step_s": seconds, "peak_mb": peak, "memory": memory})


class StepBudgetProgressBar(RichProgressBar):
    """Lightning's rich bar, but "Epoch 3" instead of "Epoch 3/-2" when the budget is
    ``max_steps`` (Lightning then sets ``max_epochs = -1`` and prints ``max_epochs - 1``)."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            description += f"/{self.trainer.max_epochs - 1}"
        return f"{description:{len(self.validation_description)}}"


_FITS = itertools.count()


def unit_loggers(ctx: UnitContext, name: str | None = None) -> list[Logger]:
    """The unit's training-curve loggers: ``<log_dir>/<name>/metrics.csv`` (CSVLogger) and,
    when ``tensorboard`` is installed, TensorBoard event files beside it. ``name`` tells
    apart the fits of one unit (``data_fraction=0.1``); by default ``fit0``, ``fit1`` ..."""
    if not ctx.log_dir or ctx.logger == "none":
        return []
    name = name or f"fit{next(_FITS)}"
    root = Path(ctx.log_dir)
    loggers: list[Logger] = []
    if ctx.logger in ("auto", "csv"):
        loggers.append(CSVLogger(root, name=name, version=""))
    has_tensorboard = importlib.util.find_spec("tensorboard") is not None
    if ctx.logger == "tensorboard" and not has_tensorboard:
        raise ValueError("--logger tensorboard needs the tensorboard package (pip install tensorboard); got it missing")
    if ctx.logger == "tensorboard" or (ctx.logger == "auto" and has_tensorboard):
        loggers.append(TensorBoardLogger(root, name=name, version="", default_hp_metric=False))
    return loggers


def make_trainer(ctx: UnitContext, callbacks: Iterable[L.Callback] = (), log_name: str | None = None, **kwargs: Any) -> L.Trainer:
    """A Trainer on the unit's hardware, logging to the unit's folder (see :func:`unit_loggers`);
    ``kwargs`` (max_steps, ...) pass through and win, ``logger=False`` included."""
    settings: dict[str, Any] = dict(
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=not ctx.quiet,
        deterministic=True,
        num_sanity_val_steps=0,
    )
    if "logger" not in kwargs:
        loggers = unit_loggers(ctx, log_name)
        settings["logger"] = loggers or False
        max_steps = kwargs.get("max_steps", -1)
        if loggers and max_steps and max_steps > 0:  # about 50 points per curve, also for short budgets
            settings["log_every_n_steps"] = max(1, min(50, max_steps // 50))
    settings.update(ctx.trainer_kwargs())
    settings.update(kwargs)
    callbacks = [FiniteLossCheck(), *callbacks]
    if ctx.fast_dev_run:  # Lightning's fast dev run: FAST_DEV_BATCHES batches of train, validation and test, no loggers
        for key in ("max_steps", "max_epochs", "limit_train_batches", "limit_val_batches", "val_check_interval",
                    "check_val_every_n_epoch", "log_every_n_steps"):
            settings.pop(key, None)
        settings["fast_dev_run"] = FAST_DEV_BATCHES
        callbacks.append(DevProbe(log_name or "train step"))
    if settings["enable_progress_bar"] and not any(isinstance(c, (RichProgressBar, TQDMProgressBar)) for c in callbacks):
        callbacks.append(StepBudgetProgressBar() if _RICH_AVAILABLE else TQDMProgressBar())  # tqdm says "Epoch 3"
    return L.Trainer(callbacks=callbacks, **settings)


def median_time(fn: Callable[[], Any], warmup: int = 2, repeats: int = 5) -> float:
    """Median wall seconds of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_trainable(module: torch.nn.Module) -> int:
    """Parameters that receive gradients (not an EMA copy or a target network)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def eval_throughput(model: torch.nn.Module, batch: torch.Tensor, warmup: int = 2, repeats: int = 5) -> float:
    """Examples per second of ``model(batch)`` in eval mode without gradients."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        seconds = median_time(lambda: model(batch), warmup, repeats)
    model.train(was_training)
    return batch.shape[0] / seconds


def lightning_overhead(
    module_factory: Callable[[], L.LightningModule],
    loader: torch.utils.data.DataLoader,
    ctx: UnitContext,
    steps: int = 30,
    warmup: int = 5,
    rounds: int = 3,
) -> dict[str, float]:
    """Median time per training step through ``Trainer.fit`` vs a plain PyTorch loop.

    Both run the same module class from the same initial weights over the same batches
    with the module's own optimizer and schedule; rounds alternate (Lightning, plain) so
    that drift in the machine's speed hits both. The plain loop is what a user would write:
    forward, cross-entropy, backward, step, schedule step, zero_grad. The Lightning side
    runs the module's ``training_step`` (with its ``self.log``) and the harness callbacks;
    only the progress bar is off (a display cost, not the harness's).
    """
    import torch.nn.functional as F

    def plain_round() -> list[float]:
        module = module_factory()
        opt_cfg = module.configure_optimizers()
        opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
        module.train()
        times, n = [], 0
        last = time.perf_counter()
        while n < steps:
            for x, y in loader:
                loss = F.cross_entropy(module(x), y)
                loss.backward()
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                now = time.perf_counter()
                times.append(now - last)
                last = now
                n += 1
                if n == steps:
                    break
        return times[warmup:]

    def lightning_round() -> list[float]:
        module = module_factory()
        timer = StepTimer()
        trainer = make_trainer(ctx, callbacks=[timer], max_steps=steps, enable_progress_bar=False, logger=False,
                               limit_val_batches=0, devices=1, strategy="auto", num_nodes=1)
        trainer.fit(module, train_dataloaders=loader)
        return timer.step_times[warmup:]

    lightning_times: list[float] = []
    plain_times: list[float] = []
    for _ in range(rounds):
        lightning_times += lightning_round()
        plain_times += plain_round()
    lit, plain = statistics.median(lightning_times), statistics.median(plain_times)
    return {"lightning_step_ms": 1e3 * lit, "plain_step_ms": 1e3 * plain, "lightning_overhead": lit / plain}
