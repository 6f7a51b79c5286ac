"""A toy benchmark for the harness tests, registered through $ICLRBENCH_PLUGINS.

Its variants misbehave on purpose: ``nan`` produces a NaN training loss, ``crash``
raises, ``slow`` sleeps for $TOY_SLEEP seconds (not part of the config, so the run id
stays the same when a test changes it to resume) after writing its process id to
$TOY_PIDFILE when that is set. ``timed`` stands for a unit whose measurements are timings
(``alone``): the runner never runs another unit beside it. Every unit appends
"variant start end" (wall-clock seconds) to $TOY_TIMES when that is set.
"""

from __future__ import annotations

import os
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.registry import Task, Tuning, Benchmark, Metric, PaperNumber, PaperRef, Variant, register_benchmark
from benchmarks.train import make_trainer
from benchmarks.unit import Measurement, UnitContext
from benchmarks.verdict import primary_vs_baseline


class Linear(L.LightningModule):
    def __init__(self, lr: float = 0.1, poison: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss)
        return loss * float("nan") if self.hparams.poison else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def data(config, data_dir, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))


def shifted(config, data_dir, seed):
    x, y = data(config, data_dir, seed).tensors
    return TensorDataset(x, y + 3.0)


def run(ctx: UnitContext) -> list[Measurement]:
    start = time.time()
    try:
        return _run(ctx)
    finally:
        if os.environ.get("TOY_TIMES"):
            with open(os.environ["TOY_TIMES"], "a") as f:
                f.write(f"{ctx.variant} {start} {time.time()}\n")


def _run(ctx: UnitContext) -> list[Measurement]:
    if ctx.variant == "crash":
        raise RuntimeError("planted failure")
    if ctx.variant in ("slow", "timed"):
        if os.environ.get("TOY_PIDFILE"):
            with open(os.environ["TOY_PIDFILE"], "w") as f:
                f.write(str(os.getpid()))
        time.sleep(float(os.environ.get("TOY_SLEEP", "0")))
    module = Linear(lr=ctx.config["lr"], poison=ctx.variant == "nan")
    trainer = make_trainer(ctx, max_steps=ctx.config["steps"], enable_progress_bar=False)
    trainer.fit(module, DataLoader(ctx.datamodule(), batch_size=16))
    x, y = ctx.datamodule().tensors
    mse = float(torch.nn.functional.mse_loss(module.net(x), y))
    return [Measurement("score", -mse), Measurement("curve", -mse, step=1.0), Measurement("threads", torch.get_num_threads())]


@register_benchmark
def toy() -> Benchmark:
    return Benchmark(
        name="toy",
        paper=PaperRef("Toy", "0000.00000", "none"),
        claim="the method beats the baseline",
        variants=[Variant("method", "method", {"lr": 0.1}), Variant("baseline", "baseline", {"lr": 0.01}),
                  Variant("nan", "method"), Variant("crash", "method"), Variant("slow", "method"),
                  Variant("timed", "method")],
        alone=("timed",),
        datasets={"synthetic": data, "shifted": shifted},
        # a preset that runs two tasks, one with its own budget, seeds and variants
        tasks={"full": {"synthetic": Task(), "shifted": Task({"steps": 6}, seeds=1, variants=("method", "baseline"))}},
        defaults={"lr": 0.05, "steps": 8},
        presets={"smoke": {"steps": 4}},
        metrics=[Metric("score", True, primary=True), Metric("curve", True, curve=True),
                 Metric("threads", True, kind="info", description="torch threads the unit ran with")],
        run=run,
        tuning=Tuning(score="score", grids={"method": {"lr": (0.1, 0.001)}, "baseline": {"lr": (0.05, 0.0001)}}, seeds=1),
        verdict=primary_vs_baseline("method", "baseline", "score"),
        paper_numbers=[PaperNumber("method", "synthetic", "score", 0.0, "nowhere", scope="target")],
    )
