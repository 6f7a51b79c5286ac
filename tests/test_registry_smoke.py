"""Every registered benchmark's smoke preset runs offline on CPU, every variant and extra,
and returns what compare and the report rely on (timm's test_models.py, over our registry).

``execute`` raising is already a failure; these asserts check what it does not: every
measurement names a declared metric (not only one with a direction), curve metrics come
with their x and scalars without, quality and info values are finite, a variant reports
only itself and a finite scalar of the benchmark's primary metric."""

from __future__ import annotations

import math

import pytest

from benchmarks.registry import get_benchmark, list_benchmarks
from benchmarks.unit import execute

UNITS = [(name, v.name, "variant") for name in list_benchmarks() for v in get_benchmark(name).variants] + [
    (name, extra, "extra") for name in list_benchmarks() for extra in get_benchmark(name).extras
]


def check_rows(bench, name: str, kind: str, rows: list[dict]) -> list[str]:
    """What is wrong with a unit's measurements (empty when nothing is)."""
    problems = [] if rows else ["no measurements"]
    for row in rows:
        label = f"{row['metric']} (step {row['step']})"
        metric = bench.metric(row["metric"])
        if metric is None:
            problems.append(f"{label}: not a declared metric")
            continue
        if metric.curve != (row["step"] is not None):
            problems.append(f"{label}: {'a curve point needs' if metric.curve else 'a scalar has no'} step")
        if metric.kind != "efficiency" and not math.isfinite(row["value"]):
            problems.append(f"{label}: {metric.kind} value {row['value']}")
        if kind == "variant" and row.get("variant") not in (None, name):
            problems.append(f"{label}: a unit of {name} reports variant {row['variant']!r}")
    if kind == "variant":
        primary = bench.primary_metric
        scalar = [r for r in rows if r["metric"] == primary.name and r["step"] is None and math.isfinite(r["value"])]
        if not primary.curve and not scalar:
            problems.append(f"no finite scalar {primary.name} (the primary metric)")
    return problems


@pytest.mark.parametrize("benchmark, name, kind", UNITS, ids=[f"{b}-{n}" for b, n, _ in UNITS])
def test_smoke_preset_runs_offline_and_measures_declared_metrics(benchmark, name, kind, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bench = get_benchmark(benchmark)
    ctx = dict(benchmark=benchmark, name=name, seed=0, preset="smoke", dataset=bench.default_dataset,
               config=bench.config("smoke", name if kind == "variant" else None), accelerator="cpu", quiet=True,
               artifacts_dir=str(tmp_path))
    result = execute({"kind": kind, "context": ctx})
    assert result["status"] == "ok"
    assert not check_rows(bench, name, kind, result["rows"])


def test_the_row_checks_catch_what_execute_lets_through():
    bench = get_benchmark("vit")
    row = dict(metric="top1", value=0.5, step=None, variant=None, higher_is_better=None)
    assert not check_rows(bench, "vit", "variant", [row])
    assert check_rows(bench, "vit", "extra", []) == ["no measurements"]
    bad = [
        dict(row, metric="top_1", higher_is_better=True),  # undeclared, though it has a direction
        dict(row, value=math.nan),  # a NaN quality value
        dict(row, metric="top1_vs_data"),  # a curve point without its x
        dict(row, step=1.0),  # a scalar with a step
        dict(row, variant="resnet"),  # another variant's number
    ]
    for r in bad:
        assert check_rows(bench, "vit", "variant", [row, r]), r
    assert check_rows(bench, "vit", "variant", [dict(row, metric="params", value=10.0)]) == [
        "no finite scalar top1 (the primary metric)"]
    assert not check_rows(bench, "vit", "variant", [row, dict(row, metric="train_throughput", value=math.inf)])
