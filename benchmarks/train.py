"""Training and timing helpers shared by every spec.

``make_trainer`` builds a ``lightning.Trainer`` with the run's hardware and scale-out
settings and the harness callbacks (a non-finite loss stops the unit with a reason).
``time_steps`` and ``throughput`` measure efficiency with warm-up and medians.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Iterable

import lightning as L
import torch

from benchmarks.unit import NonFiniteLossError, UnitContext


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


def make_trainer(ctx: UnitContext, callbacks: Iterable[L.Callback] = (), **kwargs: Any) -> L.Trainer:
    """A Trainer on the unit's hardware; ``kwargs`` (max_steps, ...) pass through."""
    settings = dict(
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=not ctx.quiet,
        deterministic=True,
        num_sanity_val_steps=0,
    )
    settings.update(ctx.trainer_kwargs())
    settings.update(kwargs)
    return L.Trainer(callbacks=[FiniteLossCheck(), *callbacks], **settings)


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
        trainer = make_trainer(ctx, callbacks=[timer], max_steps=steps, enable_progress_bar=False,
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
