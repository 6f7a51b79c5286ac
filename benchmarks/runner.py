"""Run benchmarks: one subprocess per (benchmark, variant or extra, seed), resumable.

A run lives in ``<out>/<run_id>/``. The run id is derived from the configuration and the
code version, so the same command run again resumes: units whose rows are on disk with
status ok are skipped; failed units are tried again. Each finished unit's rows are written
atomically to ``units/<unit>.csv`` and ``summary.csv`` is rebuilt from them, so an
interrupted run (Ctrl-C, SIGTERM, a killed child) loses nothing that had finished.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from benchmarks.registry import PRESETS, Benchmark, get_benchmark, lookup
from benchmarks.results import SCHEMA, atomic_write_text, concat_rows, read_rows, write_csv

DEFAULT_SEEDS = {"smoke": 1, "quick": 2, "full": 3}
REPO_ROOT = Path(__file__).resolve().parent.parent
CODE_PATHS = ("benchmarks", "lit_modules", "datamodules", "pyproject.toml", "constraints.txt")  # what a run's numbers depend on


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run; completed units are kept (exit 130)."""


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
    timeout_s: float | None = None
    quiet: bool = False


@dataclass
class Unit:
    benchmark: str
    name: str
    kind: str  # "variant" or "extra"
    role: str
    seed: int
    config: dict[str, Any]

    @property
    def stem(self) -> str:
        return f"{self.benchmark}__{self.name}__s{self.seed}"


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


def stable_hash(obj: Any, n: int = 8) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


# ----------------------------------------------------------------------------- planning
def resolve_seeds(opts: RunOptions) -> list[int]:
    n = opts.seeds if opts.seeds is not None else DEFAULT_SEEDS[opts.preset]
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
        mine[k] = value
    return mine


def plan(opts: RunOptions) -> list[Unit]:
    lookup("preset", {p: p for p in PRESETS}, opts.preset)
    units: list[Unit] = []
    seeds = resolve_seeds(opts)
    for name in opts.names:
        bench = get_benchmark(name)
        if opts.dataset is not None:
            bench.dataset(opts.dataset)  # validates the name
        over = overrides_for(bench, opts.overrides, opts.names)
        variants = [bench.variant(v) for v in opts.variants] if opts.variants else bench.variants
        for seed in seeds:
            for v in variants:
                units.append(Unit(name, v.name, "variant", v.role, seed, bench.config(opts.preset, v.name, over)))
        if opts.extras:
            for extra in bench.extras:
                units.append(Unit(name, extra, "extra", "extra", seeds[0], bench.config(opts.preset, None, over)))
    return units


def run_id_for(opts: RunOptions, fingerprint: str) -> str:
    identity = {k: v for k, v in asdict(opts).items() if k not in ("out", "fresh", "quiet", "timeout_s")}
    identity["names"] = sorted(opts.names)
    identity["seeds"] = resolve_seeds(opts)
    return f"{opts.preset}-{fingerprint[:7] if fingerprint != 'unknown' else 'nogit'}-{stable_hash([identity, fingerprint])}"


# ------------------------------------------------------------------------------ running
def _pump(stream, log, echo: bool) -> None:
    for chunk in iter(lambda: stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096), b""):
        log.write(chunk)
        log.flush()
        if echo:
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()


def _tail(log_path: Path, n: int = 12) -> str:
    try:
        text = log_path.read_bytes().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-2000:]


def run_unit(unit: Unit, opts: RunOptions, run_dir: Path, timeout_s: float) -> dict[str, Any]:
    """Execute one unit in a subprocess; return its result dict (never raises for the unit's faults)."""
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
    )
    atomic_write_text(job_path, json.dumps({"kind": unit.kind, "context": context}, indent=1))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.unit", str(job_path)], cwd=REPO_ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        pump = threading.Thread(target=_pump, args=(proc.stdout, log, not opts.quiet), daemon=True)
        pump.start()
        try:
            proc.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            if proc.poll() is None:
                _kill_group(proc)
            pump.join(timeout=5)
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


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


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
    try:
        for i, unit in enumerate(units, 1):
            label = f"[{i}/{len(units)}] {unit.benchmark}/{unit.name} seed {unit.seed}"
            if unit.stem in done:
                echo(f"{label}: complete, skipped")
                continue
            bench = get_benchmark(unit.benchmark)
            timeout = opts.timeout_s or bench.timeout_s.get(opts.preset, 3600)
            result = run_unit(unit, opts, run_dir, timeout)
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
