"""One unit of a run: a (benchmark, variant or extra, seed), executed in its own process.

The runner writes a JSON job file and starts a process for it (forked from a warm worker,
or ``python -m benchmarks.unit JOB``: see ``benchmarks.launch``); this module quiets the
libraries' chatter, seeds everything, builds a :class:`UnitContext`, calls the spec's
``run`` (or the extra), and writes the measurements to ``JOB.result.json`` atomically, from
rank zero only. Under Lightning's ``ddp`` strategy the same command is re-executed by
Lightning for ranks >= 1; they run the same code and write nothing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.results import atomic_write_text


@dataclass
class Measurement:
    """One measured value. ``step`` is the x of a curve (a training step, a data fraction,
    a sequence length); ``variant`` lets an extra measure several variants."""

    metric: str
    value: float
    step: float | None = None
    variant: str | None = None
    higher_is_better: bool | None = None


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


@dataclass
class UnitContext:
    """What a spec's ``run`` (or extra) receives."""

    benchmark: str
    name: str  # the variant, or the extra's name
    seed: int
    preset: str
    dataset: str
    config: dict[str, Any]
    data_dir: str | None = None
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    artifacts_dir: str = "."
    quiet: bool = False
    log_dir: str | None = None  # training curves (CSVLogger / TensorBoard) go here; None: no logger
    logger: str = "auto"
    # --fast-dev-run: Trainer fits run FAST_DEV_BATCHES batches of each stage (make_trainer), and custom loops (env
    # loops, federated rounds, samplers, sweeps) cut themselves to one or two iterations where they read this flag
    fast_dev_run: bool = False
    real_batch: dict[str, int] | None = None  # fast dev run on a CPU: the preset's batch sizes the cap lowered

    @property
    def variant(self) -> str:
        return self.name

    def trainer_kwargs(self) -> dict[str, Any]:
        """Hardware and scale-out arguments for ``lightning.Trainer``."""
        return dict(
            accelerator=self.accelerator,
            devices=self.devices,
            strategy=self.strategy,
            num_nodes=self.num_nodes,
            precision=self.precision,
        )

    def datamodule(self, **overrides: Any):
        from benchmarks.registry import get_benchmark

        factory = get_benchmark(self.benchmark).dataset(self.dataset)
        return factory({**self.config, **overrides}, self.data_dir, self.seed)

    def artifact(self, filename: str) -> Path:
        """A path for a file this unit produces (a sample grid, a table)."""
        path = Path(self.artifacts_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path / filename


FAST_DEV_BATCHES = 2  # batches of each stage in a fast dev run (Lightning's fast_dev_run=2)

# Steps measured in this process during a fast dev run (``benchmarks.train.DevProbe`` / ``dev_step``): one dict per
# measured step, with the model's parameter count, the batch, the step's wall time and peak memory.
DEV_STEPS: list[dict[str, Any]] = []


def _proc_status_mb(field_name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024  # kB
    return math.nan


def reset_step_peak() -> None:
    """Start measuring a step's peak memory: CUDA's allocator peak on a GPU, else the process's peak resident set
    (Linux: ``/proc/self/clear_refs`` 5 resets VmHWM to the current RSS)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # pragma: no cover  (not Linux: the process's peak since start is what can be read)
        pass


def step_peak_mb() -> tuple[float, str]:
    """(peak MiB since :func:`reset_step_peak`, what was measured)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20, "cuda allocated"
    try:
        return _proc_status_mb("VmHWM"), "process RSS"
    except OSError:  # pragma: no cover
        return peak_memory_mb(), "process max RSS"


def dev_summary(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """One record per unit from its measured steps: the model with the most parameters (a unit may fit several
    models), its last measured step's time (the first one allocates optimiser state and warms caches) and the
    highest peak memory over its steps."""
    if not steps:
        return {}
    params = max(s["params"] for s in steps)
    mine = [s for s in steps if s["params"] == params]
    return {"params": params, "what": mine[-1]["what"], "batch": mine[-1].get("batch"), "step_s": mine[-1]["step_s"],
            "step_peak_mb": max(s["peak_mb"] for s in mine), "memory": mine[-1]["memory"], "steps": len(steps)}


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0 and int(
        os.environ.get("NODE_RANK", "0")
    ) == 0


def peak_memory_mb() -> float:
    """Peak memory of this process: CUDA's allocator peak when on GPU, else max RSS."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # pragma: no cover  (torch missing is reported elsewhere)
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def device_name(accelerator: str) -> str:
    import platform

    import torch

    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} x{os.cpu_count()}"


# Library chatter silenced at its source. Lightning announces its setup and tips through
# ``rank_zero_info`` on this logger ("GPU available: ...", "TPU available: ...", a litlogger
# advertisement, "`Trainer.fit` stopped: `max_steps=8` reached."); its warnings go through
# ``warnings`` and still show, except these known ones:
KNOWN_WARNINGS = (
    # torch 2.14 deprecates LeafSpec, which lightning 2.6's _pytree still uses.
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    # in-memory tensor datasets: worker processes would only add start-up time
    r".*does not have many workers which may be a bottleneck",
    # the logging interval counts steps across epochs, so one-batch epochs (a 10 % data fraction) still log
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # fits that time training steps alone (harness overhead) skip validation on purpose
    r"You defined a `validation_step` but have no `val_dataloader`\. Skipping val loop\.",
)


def quiet_libraries() -> None:
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric.utilities.rank_zero").setLevel(logging.WARNING)
    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def seed_everything(seed: int) -> None:
    import lightning
    import torch

    threads = os.environ.get("ICLRBENCH_THREADS")
    if threads:  # --threads: fewer torch threads per unit help on a shared or oversubscribed CPU
        torch.set_num_threads(int(threads))
    lightning.seed_everything(seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def execute(job: dict[str, Any]) -> dict[str, Any]:
    """Run one unit; return the result dict (status, rows, error, peak memory ...)."""
    from benchmarks.registry import get_benchmark

    start = time.perf_counter()
    quiet_libraries()
    ctx = UnitContext(**job["context"])
    bench = get_benchmark(ctx.benchmark)
    seed_everything(ctx.seed)
    fn = bench.extras[ctx.name] if job["kind"] == "extra" else bench.run
    DEV_STEPS.clear()
    out = fn(ctx)
    rows = []
    for m in out:
        value = float(m.value)
        rows.append({**asdict(m), "value": value})
    for r in rows:
        if r["higher_is_better"] is None and bench.metric(r["metric"]) is None:
            known = ", ".join(m.name for m in bench.metrics)
            raise ValueError(f"measurement {r['metric']!r} is not a declared metric of {bench.name}; declared: {known}")
    bad = [r for r in rows if r["metric"].startswith("loss") and not math.isfinite(r["value"])]
    if bad:
        raise NonFiniteLossError(f"non-finite {bad[0]['metric']} = {bad[0]['value']}")
    return {
        "status": "ok",
        "error": "",
        "rows": rows,
        "wall_s": time.perf_counter() - start,
        "peak_mem_mb": peak_memory_mb(),
        "device_name": device_name(ctx.accelerator),
        "dev": dev_summary(DEV_STEPS) if ctx.fast_dev_run else {},
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text())
    os.environ.update(job.get("env", {}))  # this unit's share of the machine (threads, GPUs) under --jobs
    result_path = job_path.with_suffix(".result.json")
    try:
        result = execute(job)
        code = 0
    except BaseException as exc:  # the unit fails, the suite goes on: record why
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}".strip().splitlines()
        result = {"status": "error", "error": " | ".join(message)[-2000:], "rows": []}
        code = 1
    if is_rank_zero():
        atomic_write_text(result_path, json.dumps(result))
    return code


if __name__ == "__main__":
    sys.exit(main())
