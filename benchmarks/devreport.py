"""The report of a fast dev run (``iclrbench run --fast-dev-run``): a table per unit, not results.

A fast dev run trains each unit for one or two batches of every stage at the preset's model size, maybe on stand-in
data, to prove the code path before a GPU job is queued. Its report says so at the top and shows, per unit, what
sizes that job: the model's parameter count beside the paper's (the spec's ``paper_params``), the batch the step
ran, the time and peak memory of one training step on the device it ran on, and, where a CPU cap lowered the batch,
the step's time and memory extrapolated linearly to the preset's batch, labelled as an extrapolation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from benchmarks.registry import UnknownNameError, get_benchmark
from benchmarks.results import atomic_write_text

HOW_TO_READ = (
    "How to read it: `params` is counted on the model the unit built (the largest it trained), beside the paper's "
    "count for that architecture and its source. `step` is the wall time of the unit's last measured training step "
    "(forward, backward, optimiser step; the first step also allocates optimiser state) and `peak MiB` the highest "
    "memory during a step: CUDA's allocator peak on a GPU, the process's peak resident set on a CPU (which includes "
    "the Python process, the data and the libraries, so it is an upper bound of the step's own memory). Where the "
    "batch column reads `8 of 256`, the step ran a batch the CPU cap lowered (the spec's `fast_dev.cpu_batch`, or "
    "`--fast-dev-batch`), and the last two columns scale time and memory linearly to the preset's batch: the time "
    "is an estimate for this device, the memory an upper bound (the fixed part, weights and optimiser state, is "
    "scaled too). On a GPU the fast dev run keeps the preset's batch, and its columns are the job's own step."
)


def fmt_num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.{digits}g} M"
    return f"{x:.{digits}g}"


def _paper_params(benchmark: str, variant: str) -> str:
    try:
        bench = get_benchmark(benchmark)
    except UnknownNameError:
        return "—"
    for p in bench.paper_params:
        if p.variant == variant:
            return f"{fmt_num(p.params)} ({p.source})"
    return "—"


def dev_table(run_dir: Path, df: pd.DataFrame) -> list[str]:
    """Markdown rows, one per unit (its ``units/<stem>.dev.json`` record, else its rows)."""
    lines = ["| benchmark | unit | dataset | status | params (ours) | params (paper, source) | measured step | batch "
             "| step s | peak MiB | step s at preset batch (extrapolated) | peak MiB at preset batch (upper bound) "
             "| unit wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    units = sorted((run_dir / "units").glob("*.dev.json"))
    datasets = df.drop_duplicates(["benchmark", "variant"]).set_index(["benchmark", "variant"])["dataset"].to_dict()
    all_datasets = df.groupby(["benchmark", "variant"])["dataset"].agg(lambda s: sorted(set(map(str, s)))).to_dict()
    for path in units:
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        bench, unit = d.get("benchmark", "?"), d.get("unit", "?")
        dataset = str(datasets.get((bench, unit), ""))
        parts = path.name.split(".", 1)[0].split("__")
        if len(parts) == 4:  # bench__variant__task__sN: a preset of several tasks, the unit's own (drq's two tasks)
            dataset = next((x for x in all_datasets.get((bench, unit), []) if x.split(" ", 1)[0] == parts[2]), parts[2])
        real = d.get("real_batch") or {}
        batch = d.get("batch")
        scale = None
        if real and batch:
            scale = max(real.values()) / batch
        batch_cell = "—" if batch is None else (f"{batch} of {max(real.values())}" if real else f"{batch}")
        step_s, peak = d.get("step_s"), d.get("step_peak_mb")
        lines.append("| " + " | ".join([
            bench, unit, dataset, d.get("status", "?"),
            fmt_num(d.get("params")), _paper_params(bench, unit), f"{d.get('what', '—')}",
            batch_cell, fmt_num(step_s), fmt_num(peak, 4) + (f" ({d['memory']})" if d.get("memory") else ""),
            fmt_num(step_s * scale) if scale and step_s is not None else "—",
            fmt_num(peak * scale, 4) if scale and peak is not None else "—",
            fmt_num(d.get("wall_s")),
        ]) + " |")
    return lines


def write_dev_report(run_dir: str | Path, df: pd.DataFrame) -> Path:
    """``report.md`` of a fast dev run: a warning line, the run's header, the per-unit table, the failed units."""
    from benchmarks.report import _run_info, failed_units

    run_dir = Path(run_dir)
    out = [f"# iclrbench report: {run_dir.name} (fast dev run)", "",
           "**Fast dev run**: one or two batches of each stage per unit at the preset's model size "
           + ("on stand-in data " if df["dataset"].astype(str).str.endswith("(stand-in)").any() else "")
           + "to prove the code path. These rows are not results: no claims, no paper numbers beside them, and "
           "`iclrbench compare` refuses them.", "", *_run_info(run_dir, df), "",
           "## Per unit: model size, one step's time and memory", "", HOW_TO_READ, "", *dev_table(run_dir, df), ""]
    out += failed_units(df)
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(out))
    return report
