"""Run benchmarks: one process per (benchmark, variant or extra, seed), resumable.

A run lives in ``<out>/<run_id>/``. The run id is derived from the configuration and the
code version, so the same command run again resumes: units whose rows are on disk with
status ok are skipped; failed units are tried again. Each finished unit's rows are written
atomically to ``units/<unit>.csv`` and ``summary.csv`` is rebuilt from them, so an
interrupted run (Ctrl-C, SIGTERM, a killed child) loses nothing that had finished.
How a unit's process starts (forked from a warm worker, or a fresh interpreter) is
``benchmarks.launch``'s business.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from benchmarks.errors import RunInterrupted
from benchmarks.launch import Echo, Slots, SubmititLauncher, UnitProcess, WarmWorker, visible_gpus
from benchmarks.lock import RunLock
from benchmarks.plan import (  # noqa: F401  (re-exported: the runner's public names)
    DEFAULT_SEEDS, NOT_IN_RUN_ID, RunOptions, Unit, overrides_for, plan, resolve_seeds, run_id_for, stable_hash,
)
from benchmarks.registry import Benchmark, get_benchmark
from benchmarks.results import SCHEMA, atomic_write_text, concat_rows, read_rows, write_csv

REPO_ROOT = Path(__file__).resolve().parent.parent
CODE_PATHS = ("benchmarks", "lit_modules", "datamodules", "pyproject.toml", "constraints.txt")  # what a run's numbers depend on



# --------------------------------------------------------------------------- versions
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def code_version() -> tuple[str, bool, str]:
    """(git sha, dirty, a fingerprint of sha + uncommitted changes, new untracked files included)."""
    sha = (_git("rev-parse", "HEAD") or "").strip() or "unknown"
    diff = _git("diff", "HEAD", "--", *CODE_PATHS) or ""
    digest = hashlib.sha1(diff.encode())
    untracked = sorted(filter(None, (_git("ls-files", "--others", "--exclude-standard", "--", *CODE_PATHS) or "").splitlines()))
    for name in untracked:
        digest.update(name.encode())
        try:
            digest.update((REPO_ROOT / name).read_bytes())
        except OSError:
            pass
    dirty = bool(diff.strip() or untracked)
    return sha, dirty, sha + (digest.hexdigest() if dirty else "")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


# ------------------------------------------------------------------------------ running
def _tail(log_path: Path, n: int = 12) -> str:
    try:
        text = log_path.read_bytes().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-2000:]


@dataclass
class Running:
    """A unit that has been started: its process or job, its slots and its clock."""

    unit: Unit
    handle: Any  # launch.UnitProcess or launch.SubmititJob
    echo: Echo | None
    slots: list[str]
    timeout_s: float
    started: float = field(default_factory=time.perf_counter)

    def expired(self) -> bool:
        return time.perf_counter() - self.started > self.timeout_s


def start_unit(unit: Unit, opts: RunOptions, run_dir: Path, timeout_s: float, launcher: Any = None,
               slots: tuple[list[str], dict[str, str]] = ([], {}), echo: bool = True) -> Running:
    """Write the unit's job file and start it: forked from the warm worker, in a fresh
    interpreter, or as a submitit job (re-attached when a recorded job is still running)."""
    run_dir = run_dir.resolve()  # units run in the repository root
    units_dir = run_dir / "units"
    units_dir.mkdir(parents=True, exist_ok=True)
    job_path = units_dir / f"{unit.stem}.json"
    result_path = job_path.with_suffix(".result.json")
    log_path = job_path.with_suffix(".log")
    record = job_path.with_suffix(".job.json")
    ids, unit_env = slots
    if isinstance(launcher, SubmititLauncher):
        attached = launcher.attach(record)
        if attached is not None:
            return Running(unit, attached, None, ids, timeout_s)
    result_path.unlink(missing_ok=True)
    bench = get_benchmark(unit.benchmark)
    dataset = unit.dataset or opts.dataset or bench.default_dataset
    context = dict(
        benchmark=unit.benchmark, name=unit.name, seed=unit.seed, preset=opts.preset,
        dataset=dataset, config=unit.config, data_dir=opts.stand_ins.get(f"{unit.benchmark}/{dataset}", opts.data_dir),
        accelerator=opts.accelerator, devices=opts.devices, strategy=opts.strategy, num_nodes=opts.num_nodes,
        precision=opts.precision, artifacts_dir=str(run_dir / "artifacts" / unit.benchmark), quiet=opts.quiet,
        log_dir=None if opts.logger == "none" else str(run_dir / "logs" / unit.stem), logger=opts.logger,
        fast_dev_run=opts.fast_dev_run, real_batch=unit.real_batch or None,
    )
    atomic_write_text(job_path, json.dumps({"kind": unit.kind, "context": context, "env": unit_env}, indent=1))
    if isinstance(launcher, SubmititLauncher):
        log_path.write_bytes(b"")
        devices = opts.devices if isinstance(opts.devices, int) else 1
        return Running(unit, launcher.submit(unit.stem, job_path, log_path, record, timeout_s, devices), None, ids, timeout_s)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = UnitProcess(job_path, log_path, env, launcher if opts.warm else None)
    return Running(unit, proc, Echo(log_path, enabled=echo and not opts.quiet), ids, timeout_s)


def collect_unit(running: Running, opts: RunOptions, run_dir: Path, timed_out: bool = False) -> dict[str, Any]:
    """The result dict of a finished unit, or of one that ran out of time (killed here);
    never raises for the unit's own faults."""
    if timed_out:
        running.handle.kill()
    if running.echo:
        running.echo.close()
    wall = time.perf_counter() - running.started
    job_path = run_dir.resolve() / "units" / f"{running.unit.stem}.json"
    log_path = job_path.with_suffix(".log")
    if timed_out:
        return {"status": "error", "error": f"timed out after {running.timeout_s:.0f} s (preset {opts.preset}); "
                f"log tail: {_tail(log_path, 4)}", "rows": [], "wall_s": wall}
    try:
        result = json.loads(job_path.with_suffix(".result.json").read_text())
    except (OSError, json.JSONDecodeError):
        result = {"status": "error", "error": f"exit code {running.handle.returncode}, no result; log tail: {_tail(log_path)}",
                  "rows": []}
    result.setdefault("wall_s", wall)
    return result


STAND_IN = " (stand-in)"  # the dataset column of rows measured on generated stand-in data
# a fast dev run's own rows (one set per unit): what sizes a GPU job. Metric names the harness owns, not the specs.
DEV_METRICS = {"dev_params": "params", "dev_batch": "batch", "dev_step_s": "step_s", "dev_step_peak_mb": "step_peak_mb"}


def dataset_label(unit: Unit, opts: RunOptions) -> str:
    bench = get_benchmark(unit.benchmark)
    dataset = unit.dataset or opts.dataset or bench.default_dataset
    return dataset + (STAND_IN if f"{unit.benchmark}/{dataset}" in opts.stand_ins else "")


def rows_for(unit: Unit, result: dict[str, Any], opts: RunOptions, run_id: str, version: tuple[str, bool, str]) -> pd.DataFrame:
    bench = get_benchmark(unit.benchmark)
    roles = {v.name: v.role for v in bench.variants}
    columns = SCHEMA + (["fast_dev_run"] if opts.fast_dev_run else [])
    common = dict(
        run_id=run_id, benchmark=unit.benchmark, dataset=dataset_label(unit, opts), preset=opts.preset,
        seed=unit.seed, status=result["status"], error=result.get("error", ""), wall_s=round(result.get("wall_s", 0.0), 3),
        peak_mem_mb=round(result.get("peak_mem_mb", float("nan")), 1), accelerator=opts.accelerator, devices=opts.devices,
        strategy=opts.strategy, precision=opts.precision, device_name=result.get("device_name", ""),
        torch=_version("torch"), lightning=_version("lightning"), git_sha=version[0], git_dirty=version[1],
        config_hash=stable_hash(unit.config), timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    if opts.fast_dev_run:
        common["fast_dev_run"] = True
    if result["status"] != "ok":
        row = dict(common, variant=unit.name, role=unit.role, metric="", value=float("nan"), higher_is_better=None, step=None)
        return pd.DataFrame([row], columns=columns)
    rows = []
    for m in result["rows"]:
        variant = m.get("variant") or unit.name
        metric = bench.metric(m["metric"])
        hib = m.get("higher_is_better")
        rows.append(dict(
            common, variant=variant, role=roles.get(variant, unit.role), metric=m["metric"], value=m["value"],
            higher_is_better=hib if hib is not None else (metric.higher_is_better if metric else None), step=m.get("step"),
        ))
    dev = result.get("dev") or {}
    for name, key in DEV_METRICS.items():
        if dev.get(key) is not None:
            rows.append(dict(common, variant=unit.name, role=unit.role, metric=name, value=float(dev[key]),
                             higher_is_better=None, step=None))
    return pd.DataFrame(rows, columns=columns)


def load_units(run_dir: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for path in sorted((run_dir / "units").glob("*.csv")):
        try:
            out[path.stem] = read_rows(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue  # a stray file; the unit will be run again
    return out


def write_summary(run_dir: Path) -> pd.DataFrame:
    df = concat_rows(load_units(run_dir).values())
    write_csv(run_dir / "summary.csv", df)
    return df


def _headline(unit: Unit, rows: pd.DataFrame) -> str:
    ok = rows[(rows["status"] == "ok") & rows["step"].isna()]
    shown = ok.head(3)
    return ", ".join(f"{r.metric}={r.value:.4g}" for r in shown.itertuples())


def _units_module(bench: Benchmark) -> str | None:
    """The module a benchmark's units run (preloaded into the warm worker)."""
    target = getattr(bench.run, "target", None)
    return target.partition(":")[0] if target else None


def _on_sigterm(signum, frame):  # pragma: no cover  (exercised through a subprocess test)
    raise RunInterrupted()


def make_launcher(opts: RunOptions, run_dir: Path, units: list[Unit]) -> Any:
    """The warm worker (default), nothing (cold start: fresh interpreters) or a submitit launcher."""
    if opts.launcher != "process":
        return SubmititLauncher(opts.launcher, run_dir.resolve(), opts.slurm)
    if not opts.warm:
        return None
    return WarmWorker(sorted({_units_module(get_benchmark(u.benchmark)) for u in units} - {None}))


MAX_DEFAULT_JOBS = 8  # a CPU machine's default: at most this many units at a time (memory: ~1-2 GB each at quick)


def default_jobs(opts: RunOptions, gpus: list[str], all_at_once: int) -> int:
    """Units at a time when ``--jobs`` is not given. submitit: all at once. Here with GPUs: one (``--jobs N`` to
    share them out). On a CPU: one unit per core, up to MAX_DEFAULT_JOBS, each with cores ÷ jobs torch threads,
    which is how the stored quick reference is made (2 cores: ``--jobs 2 --threads 1``); Lightning's own
    multi-process units (``--devices`` > 1, ``--num-nodes`` > 1) keep one at a time."""
    if opts.launcher != "process":
        return max(1, all_at_once)
    if gpus or str(opts.devices) != "1" or opts.num_nodes != 1:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_JOBS))


def execute_run(opts: RunOptions, echo: Callable[[str], None] = print) -> Path:
    """Plan, run (resuming; up to ``opts.jobs`` units at a time), summarise and report;
    returns the run directory. One line per finished unit, in completion order; the
    summary is rebuilt as units finish; only this process writes it."""
    units = plan(opts)
    version = code_version()
    run_id = run_id_for(opts, version[2])
    run_dir = Path(opts.out) / run_id
    if opts.fresh and run_dir.exists():
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(opts.out) / f"{run_id}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir, wait=opts.wait, echo=echo)
    lock.acquire()  # one runner per run folder: a second one refuses (exit 2) or, with --wait, waits
    try:
        return _execute_locked(opts, units, version, run_dir, echo)
    finally:
        lock.release()


def _execute_locked(opts: RunOptions, units: list[Unit], version: tuple, run_dir: Path, echo: Callable[[str], None]) -> Path:
    done = {stem for stem, df in load_units(run_dir).items() if (df["status"] == "ok").all()}
    echo(f"run {run_dir.name}: {len(units)} units ({len(done & {u.stem for u in units})} already complete) -> {run_dir}")
    devices = opts.devices if isinstance(opts.devices, int) else 1
    threads = int(os.environ["ICLRBENCH_THREADS"]) if os.environ.get("ICLRBENCH_THREADS") else None
    here = opts.launcher == "process"
    gpus = visible_gpus(opts.accelerator) if here else []
    jobs = opts.jobs or default_jobs(opts, gpus, len(units) * devices)
    slots = Slots(jobs, devices, gpus, threads, share_cores=here)
    atomic_write_text(run_dir / "run.json", json.dumps(
        {"run_id": run_dir.name, "options": asdict(opts), "git_sha": version[0], "git_dirty": version[1],
         # how it was run (not part of the run id): units at a time and torch threads per unit
         "fast_dev_run": opts.fast_dev_run,
         "execution": {"jobs": slots.capacity, "threads_per_unit": slots.threads, "cpu_count": os.cpu_count(),
                       "gpus": len(gpus), "launcher": opts.launcher,
                       "alone": sorted(f"{u.benchmark}/{u.name}" for u in units if u.alone)}}, indent=1, default=str))
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    failed, finished = 0, 0
    # units whose measurements are timings run alone, after the rest (a unit beside them would time its neighbour)
    pending = sorted((u for u in units if u.stem not in done), key=lambda u: u.alone)
    for unit in units:
        if unit.stem in done:
            finished += 1
            echo(f"[{finished}/{len(units)}] {unit.benchmark}/{unit.name} seed {unit.seed}: complete, skipped")
    running: list[Running] = []
    launcher = make_launcher(opts, run_dir, pending) if pending else None
    try:
        while pending or running:
            while pending and slots.can_take() and not any(r.unit.alone for r in running) \
                    and not (pending[0].alone and running):
                unit = pending.pop(0)
                timeout = opts.timeout_s or get_benchmark(unit.benchmark).timeout_s.get(opts.preset, 3600)
                running.append(start_unit(unit, opts, run_dir, timeout, launcher, slots.take(), echo=slots.capacity == 1))
            ended = _wait_any(running)
            for r in ended:
                running.remove(r)
                slots.give_back(r.slots)
                result = collect_unit(r, opts, run_dir, timed_out=r.handle.returncode is None)
                rows = rows_for(r.unit, result, opts, run_dir.name, version)
                write_csv(run_dir / "units" / f"{r.unit.stem}.csv", rows)
                if opts.fast_dev_run:  # the measured step in words and the batch a CPU cap lowered, for the report
                    atomic_write_text(run_dir / "units" / f"{r.unit.stem}.dev.json", json.dumps(
                        {**(result.get("dev") or {}), "real_batch": r.unit.real_batch, "benchmark": r.unit.benchmark,
                         "unit": r.unit.name, "status": result["status"], "wall_s": result.get("wall_s")}))
                write_summary(run_dir)
                finished += 1
                label = f"[{finished}/{len(units)}] {r.unit.benchmark}/{r.unit.name} seed {r.unit.seed}"
                if result["status"] == "ok":
                    echo(f"{label}: ok in {result.get('wall_s', 0):.1f}s  {_headline(r.unit, rows)}")
                else:
                    failed += 1
                    echo(f"{label}: ERROR in {result.get('wall_s', 0):.1f}s  {result.get('error', '')[:300]}")
    except KeyboardInterrupt:
        for r in running:  # Ctrl-C or SIGTERM: stop (or cancel) what is running; keep what finished
            r.handle.kill()
            if r.echo:
                r.echo.close()
        write_summary(run_dir)
        raise RunInterrupted(f"interrupted; completed units are kept in {run_dir}; run the same command to resume") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = write_summary(run_dir)
    from benchmarks.report import write_report

    report = write_report(run_dir, summary)
    echo(f"done: {len(units) - failed} ok, {failed} failed. summary: {run_dir / 'summary.csv'}  report: {report}")
    return run_dir


def _wait_any(running: list[Running], poll_s: float = 0.1) -> list[Running]:
    """Block until at least one running unit has ended or run out of time; return those."""
    while True:
        if len(running) == 1:  # one at a time: block on it (no polling latency)
            r = running[0]
            r.handle.wait(max(0.0, r.timeout_s - (time.perf_counter() - r.started)))
            return running[:]
        ended = [r for r in running if r.handle.wait(0) or r.expired()]
        if ended:
            return ended
        time.sleep(poll_s)
