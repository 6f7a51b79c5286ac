"""What a run will do: its options, its units and its run id.

Planning validates every name (benchmarks, variants, datasets, presets, ``--set`` keys)
against the specs' declarations and imports nothing heavy, so that a bad command line is
answered at once; ``benchmarks.runner`` executes the plan.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.registry import PRESETS, Benchmark, Variant, get_benchmark, lookup

DEFAULT_SEEDS = {"smoke": 1, "quick": 3, "full": 3}  # a spec's ``seeds`` overrides these per preset

@dataclass
class RunOptions:
    names: list[str]
    preset: str = "quick"
    seeds: int | None = None
    dataset: str | None = None
    data_dir: str | None = None
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    out: str = "results/runs"
    overrides: dict[str, Any] = field(default_factory=dict)  # "key" or "bench.key" -> value
    variants: list[str] | None = None
    extras: bool = True
    fresh: bool = False
    wait: bool = False  # another runner holds the run folder: wait for it instead of refusing
    timeout_s: float | None = None
    quiet: bool = False
    logger: str = "auto"  # auto (CSV, plus TensorBoard when installed) | csv | tensorboard | none
    cold_start: bool = False  # every unit in a fresh interpreter instead of forked from the warm worker
    jobs: int = 0  # units at a time (--devices N units take N slots); 0: 1 here, all at once with submitit
    launcher: str = "process"  # process | slurm | submitit-local
    slurm: dict[str, Any] = field(default_factory=dict)  # submitit parameters (slurm_partition, gpus_per_node ...)
    fast_dev_run: bool = False  # one or two batches of every stage at the preset's model size; rows are not results
    fast_dev_batch: int | None = None  # --fast-dev-batch: the batch cap of a fast dev run (default: the spec's on a CPU)
    stand_in_data: bool = False  # a missing real dataset is replaced by a generated stand-in in its on-disk format
    stand_ins: dict[str, str] = field(default_factory=dict)  # "bench/dataset" -> the stand-in's folder (set by the CLI)

    @property
    def warm(self) -> bool:
        """Fork units from the warm worker, unless Lightning will launch processes of its own."""
        return not self.cold_start and str(self.devices) == "1" and self.num_nodes == 1 and self.launcher == "process"


LOGGERS = ("auto", "csv", "tensorboard", "none")
LAUNCHERS = ("process", "slurm", "submitit-local")
NOT_IN_RUN_ID = ("out", "fresh", "wait", "quiet", "timeout_s", "logger", "cold_start", "jobs", "launcher", "slurm",
                 "stand_ins")  # not results


@dataclass
class Unit:
    benchmark: str
    name: str
    kind: str  # "variant" or "extra"
    role: str
    seed: int
    config: dict[str, Any]
    alone: bool = False  # its measurements are timings: it runs with no other unit beside it
    dataset: str = ""  # the dataset (task) it runs on
    task: str = ""  # the dataset again when the run covers several (part of the stem), else ""
    real_batch: dict[str, int] = field(default_factory=dict)  # fast dev run: the preset's batch sizes a CPU cap lowered

    @property
    def stem(self) -> str:
        return f"{self.benchmark}__{self.name}__{self.task + '__' if self.task else ''}s{self.seed}"



def stable_hash(obj: Any, n: int = 8) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def visible_gpus(accelerator: str) -> list[str]:
    """GPU ids units may be given under ``--jobs`` (without importing torch): those in
    ``$CUDA_VISIBLE_DEVICES``, else one per NVIDIA device the driver lists; none for cpu."""
    if accelerator == "cpu":
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    return [str(i) for i in range(len(list(Path("/proc/driver/nvidia/gpus").glob("*"))))]


def fast_dev_config(bench: Benchmark, opts: RunOptions, cfg: dict[str, Any], over: dict[str, Any]) -> tuple[dict, dict]:
    """A unit's config in a fast dev run: the spec's ``fast_dev.config`` (budgets cut to one or two iterations) on
    top of the preset, ``--set`` still winning; on a CPU (or with ``--fast-dev-batch N``) the batch keys are capped.
    Returns (config, {batch key: the preset's value} for the keys the cap lowered)."""
    fd = bench.fast_dev
    cfg = {**cfg, **{k: v for k, v in fd.config.items() if k not in over}}
    cap = opts.fast_dev_batch if opts.fast_dev_batch is not None else (fd.cpu_batch if not visible_gpus(opts.accelerator) else None)
    real = {}
    for key in fd.batch_keys:
        if cap is not None and key not in over and isinstance(cfg[key], int) and cfg[key] > cap:
            real[key], cfg[key] = cfg[key], cap
    return cfg, real


# ----------------------------------------------------------------------------- planning
def resolve_seeds(opts: RunOptions, bench: Benchmark | None = None, variant: Variant | None = None) -> list[int]:
    """--seeds N, else the variant's own count for the preset, else the benchmark's, else DEFAULT_SEEDS."""
    if opts.seeds is not None:
        n = opts.seeds
    elif opts.fast_dev_run:
        n = 1  # a fast dev run proves the code path, once per unit
    else:
        n = ((variant.seeds.get(opts.preset) if variant is not None else None)
             or (bench.seeds.get(opts.preset) if bench is not None else None) or DEFAULT_SEEDS[opts.preset])
    if n < 1:
        raise ValueError(f"--seeds must be at least 1; got {n}")
    return list(range(n))


def overrides_for(bench: Benchmark, overrides: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The ``--set`` values that apply to ``bench``; unscoped keys must be known to all."""
    mine = {}
    for key, value in overrides.items():
        scope, _, k = key.rpartition(".")
        if scope:
            lookup("benchmark in --set", {n: n for n in names}, scope)
            if scope != bench.name:
                continue
        lookup(f"config key of {bench.name} (--set)", bench.defaults, k)
        default = bench.defaults[k]
        if isinstance(default, (int, float)) and not isinstance(default, bool) and value is not None \
                and not isinstance(value, (int, float)):
            raise ValueError(f"--set {key}: expected a number (the default is {default!r}); got {value!r}")
        mine[k] = value
    return mine


def plan(opts: RunOptions) -> list[Unit]:
    lookup("preset", {p: p for p in PRESETS}, opts.preset)
    lookup("launcher", {x: x for x in LAUNCHERS}, opts.launcher)
    lookup("logger", {x: x for x in LOGGERS}, opts.logger)
    if opts.fast_dev_batch is not None and opts.fast_dev_batch < 1:
        raise ValueError(f"--fast-dev-batch must be at least 1; got {opts.fast_dev_batch}")
    if opts.fast_dev_batch is not None and not opts.fast_dev_run:
        raise ValueError("--fast-dev-batch applies to --fast-dev-run only")
    if opts.jobs < 0:
        raise ValueError(f"--jobs must be at least 1 (or 0: one here, all at once with submitit); got {opts.jobs}")
    units: list[Unit] = []
    resolve_seeds(opts)  # validates --seeds
    for name in opts.names:
        bench = get_benchmark(name)
        seeds = resolve_seeds(opts, bench)
        if opts.dataset is not None:
            bench.dataset(opts.dataset)  # validates the name
        over = overrides_for(bench, opts.overrides, opts.names)
        variants = [bench.variant(v) for v in opts.variants] if opts.variants else bench.variants
        tasks = bench.tasks_for(opts.preset, opts.dataset)
        # variant-major: units that run side by side (--jobs) are one variant's seeds, which share nothing, rather than
        # one seed's variants, which may share a cached network (score_sde's VE-PC and VE-P) and would wait on its lock
        for dataset in tasks:
            task = bench.task(opts.preset, dataset)
            for v in variants:
                if task.variants is not None and v.name not in task.variants and not opts.variants:
                    continue  # not run on this task (named with --variant, it runs)
                own = resolve_seeds(opts, bench, v)
                for seed in own[:task.seeds] if task.seeds is not None and opts.seeds is None else own:
                    cfg, real = _config(bench, opts, v.name, over, dataset)
                    units.append(Unit(name, v.name, "variant", v.role, seed, cfg, alone=v.name in bench.alone,
                                      dataset=dataset, task=dataset if len(tasks) > 1 else "", real_batch=real))
        if opts.extras:
            for extra in bench.extras:
                cfg, real = _config(bench, opts, None, over, tasks[0])
                units.append(Unit(name, extra, "extra", "extra", seeds[0], cfg, alone=extra in bench.alone,
                                  dataset=tasks[0], real_batch=real))
    return units


def _config(bench: Benchmark, opts: RunOptions, variant: str | None, over: dict, dataset: str) -> tuple[dict, dict]:
    cfg = bench.config(opts.preset, variant, over, dataset)
    return fast_dev_config(bench, opts, cfg, over) if opts.fast_dev_run else (cfg, {})


def run_id_for(opts: RunOptions, fingerprint: str) -> str:
    identity = {k: v for k, v in asdict(opts).items() if k not in NOT_IN_RUN_ID}
    identity["names"] = sorted(opts.names)
    identity["seeds"] = {name: {v.name: resolve_seeds(opts, get_benchmark(name), v) for v in get_benchmark(name).variants}
                         for name in sorted(opts.names)}
    prefix = f"{opts.preset}-fastdev" if opts.fast_dev_run else opts.preset
    return f"{prefix}-{fingerprint[:7] if fingerprint != 'unknown' else 'nogit'}-{stable_hash([identity, fingerprint])}"
