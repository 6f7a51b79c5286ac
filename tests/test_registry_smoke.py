"""Every registered benchmark's smoke preset runs offline on CPU, every variant and extra,
and returns finite values for declared metrics (timm's test_models.py, over our registry)."""

from __future__ import annotations

import math

import pytest

from benchmarks.registry import get_benchmark, list_benchmarks
from benchmarks.unit import execute

UNITS = [(name, v.name, "variant") for name in list_benchmarks() for v in get_benchmark(name).variants] + [
    (name, extra, "extra") for name in list_benchmarks() for extra in get_benchmark(name).extras
]


@pytest.mark.parametrize("benchmark, name, kind", UNITS, ids=[f"{b}-{n}" for b, n, _ in UNITS])
def test_smoke_preset_runs_offline_and_measures_declared_metrics(benchmark, name, kind, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bench = get_benchmark(benchmark)
    ctx = dict(benchmark=benchmark, name=name, seed=0, preset="smoke", dataset=bench.default_dataset,
               config=bench.config("smoke", name if kind == "variant" else None), accelerator="cpu", quiet=True,
               artifacts_dir=str(tmp_path))
    result = execute({"kind": kind, "context": ctx})
    assert result["status"] == "ok" and result["rows"]
    for row in result["rows"]:
        assert bench.metric(row["metric"]) is not None or row["higher_is_better"] is not None
        assert math.isfinite(row["value"]) or bench.metric(row["metric"]).kind == "efficiency", row
    if kind == "variant":
        primary = bench.primary_metric.name
        assert any(r["metric"].split("@")[0] == primary for r in result["rows"]), f"{benchmark}/{name} lacks {primary}"
