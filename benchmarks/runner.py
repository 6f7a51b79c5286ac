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
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from benchmarks.errors import RunInterrupted
from benchmarks.launch import Echo, UnitProcess, WarmWorker
from benchmarks.plan import (  # noqa: F401  (re-exported: the runner's public names)
    DEFAULT_SEEDS, LOGGERS, NOT_IN_RUN_ID, RunOptions, Unit, overrides_for, plan, resolve_seeds, run_id_for, stable_hash,
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
    """(git sha, dirty, a fingerprint of sha + uncommitted changes)."""
    sha = (_git("rev-parse", "HEAD") or "").strip() or "unknown"
    diff = _git("diff", "HEAD", "--", *CODE_PATHS) or ""
    dirty = bool(diff.strip())
    fingerprint = sha + (hashlib.sha1(diff.encode()).hexdigest() if dirty else "")
    return sha, dirty, fingerprint


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


def run_unit(unit: Unit, opts: RunOptions, run_dir: Path, timeout_s: float, worker: WarmWorker | None = None) -> dict[str, Any]:
    """Execute one unit in a process of its own; return its result dict (never raises for the unit's faults)."""
    run_dir = run_dir.resolve()  # units run in the repository root
    units_dir = run_dir / "units"
    units_dir.mkdir(parents=True, exist_ok=True)
    job_path = units_dir / f"{unit.stem}.json"
    result_path = job_path.with_suffix(".result.json")
    log_path = job_path.with_suffix(".log")
    result_path.unlink(missing_ok=True)
    bench = get_benchmark(unit.benchmark)
    context = dict(
        benchmark=unit.benchmark, name=unit.name, seed=unit.seed, preset=opts.preset,
        dataset=opts.dataset or bench.default_dataset, config=unit.config, data_dir=opts.data_dir,
        accelerator=opts.accelerator, devices=opts.devices, strategy=opts.strategy, num_nodes=opts.num_nodes,
        precision=opts.precision, artifacts_dir=str(run_dir / "artifacts" / unit.benchmark), quiet=opts.quiet,
        log_dir=None if opts.logger == "none" else str(run_dir / "logs" / unit.stem), logger=opts.logger,
    )
    atomic_write_text(job_path, json.dumps({"kind": unit.kind, "context": context}, indent=1))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = time.perf_counter()
    proc = UnitProcess(job_path, log_path, env, worker if opts.warm else None)
    echo = Echo(log_path, enabled=not opts.quiet)
    try:
        timed_out = not proc.wait(timeout_s)
    finally:
        if proc.returncode is None:  # timed out, or the runner is interrupted
            proc.kill()
        echo.close()
    wall = time.perf_counter() - start
    if timed_out:
        return {"status": "error", "error": f"timed out after {timeout_s:.0f} s (preset {opts.preset}); "
                f"log tail: {_tail(log_path, 4)}", "rows": [], "wall_s": wall}
    try:
        result = json.loads(result_path.read_text())
    except (OSError, json.JSONDecodeError):
        result = {"status": "error", "error": f"exit code {proc.returncode}, no result; log tail: {_tail(log_path)}", "rows": []}
    result.setdefault("wall_s", wall)
    return result


def rows_for(unit: Unit, result: dict[str, Any], opts: RunOptions, run_id: str, version: tuple[str, bool, str]) -> pd.DataFrame:
    bench = get_benchmark(unit.benchmark)
    roles = {v.name: v.role for v in bench.variants}
    common = dict(
        run_id=run_id, benchmark=unit.benchmark, dataset=opts.dataset or bench.default_dataset, preset=opts.preset,
        seed=unit.seed, status=result["status"], error=result.get("error", ""), wall_s=round(result.get("wall_s", 0.0), 3),
        peak_mem_mb=round(result.get("peak_mem_mb", float("nan")), 1), accelerator=opts.accelerator, devices=opts.devices,
        strategy=opts.strategy, precision=opts.precision, device_name=result.get("device_name", ""),
        torch=_version("torch"), lightning=_version("lightning"), git_sha=version[0], git_dirty=version[1],
        config_hash=stable_hash(unit.config), timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    if result["status"] != "ok":
        row = dict(common, variant=unit.name, role=unit.role, metric="", value=float("nan"), higher_is_better=None, step=None)
        return pd.DataFrame([row], columns=SCHEMA)
    rows = []
    for m in result["rows"]:
        variant = m.get("variant") or unit.name
        metric = bench.metric(m["metric"])
        hib = m.get("higher_is_better")
        rows.append(dict(
            common, variant=variant, role=roles.get(variant, unit.role), metric=m["metric"], value=m["value"],
            higher_is_better=hib if hib is not None else (metric.higher_is_better if metric else None), step=m.get("step"),
        ))
    return pd.DataFrame(rows, columns=SCHEMA)


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


def execute_run(opts: RunOptions, echo: Callable[[str], None] = print) -> Path:
    """Plan, run (resuming), summarise and report; returns the run directory."""
    units = plan(opts)
    version = code_version()
    run_id = run_id_for(opts, version[2])
    run_dir = Path(opts.out) / run_id
    if opts.fresh and run_dir.exists():
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(opts.out) / f"{run_id}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "run.json", json.dumps(
        {"run_id": run_dir.name, "options": asdict(opts), "git_sha": version[0], "git_dirty": version[1]}, indent=1, default=str))
    done = {stem for stem, df in load_units(run_dir).items() if (df["status"] == "ok").all()}
    echo(f"run {run_dir.name}: {len(units)} units ({len(done & {u.stem for u in units})} already complete) -> {run_dir}")
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    failed = 0
    worker = WarmWorker(sorted({_units_module(get_benchmark(u.benchmark)) for u in units} - {None})) if opts.warm else None
    try:
        for i, unit in enumerate(units, 1):
            label = f"[{i}/{len(units)}] {unit.benchmark}/{unit.name} seed {unit.seed}"
            if unit.stem in done:
                echo(f"{label}: complete, skipped")
                continue
            bench = get_benchmark(unit.benchmark)
            timeout = opts.timeout_s or bench.timeout_s.get(opts.preset, 3600)
            result = run_unit(unit, opts, run_dir, timeout, worker)
            rows = rows_for(unit, result, opts, run_dir.name, version)
            write_csv(run_dir / "units" / f"{unit.stem}.csv", rows)
            write_summary(run_dir)
            if result["status"] == "ok":
                echo(f"{label}: ok in {result.get('wall_s', 0):.1f}s  {_headline(unit, rows)}")
            else:
                failed += 1
                echo(f"{label}: ERROR in {result.get('wall_s', 0):.1f}s  {result.get('error', '')[:300]}")
    except KeyboardInterrupt:
        write_summary(run_dir)
        raise RunInterrupted(f"interrupted; completed units are kept in {run_dir}; run the same command to resume") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = write_summary(run_dir)
    from benchmarks.report import write_report

    report = write_report(run_dir, summary)
    echo(f"done: {len(units) - failed} ok, {failed} failed. summary: {run_dir / 'summary.csv'}  report: {report}")
    return run_dir
