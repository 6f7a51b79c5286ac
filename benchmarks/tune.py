"""``iclrbench tune NAME``: choose the settings of a benchmark's tuned variants by the grid its spec declares.

Every point of every variant's grid (``Benchmark.tuning``: the same number of tries for each
variant) runs as an ordinary run of that variant alone, with the point as ``--set`` overrides,
``tuning.seeds`` seeds and no extras, so a try is resumable and its rows are the usual ones.
A try is scored by ``tuning.score``, a metric measured on a split the verdict does not judge
(flyvec: ``mean_rho@split=tune``, the tuning half of the word pairs); the best mean over seeds
wins. The table of every try goes to ``<out>/<name>-<preset>-tuning.csv``; the spec adopts the
winners by hand, citing the stored table, so a run never changes settings by itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import pandas as pd

from benchmarks.plan import RunOptions
from benchmarks.registry import get_benchmark
from benchmarks.results import atomic_write_text, read_rows


def tune(name: str, preset: str = "quick", out: str = "results/tuning", jobs: int = 0,
         echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Run every try of ``name``'s tuning grids; returns (and writes) the table of tries, best first per variant."""
    from benchmarks.runner import execute_run

    bench = get_benchmark(name)
    t = bench.tuning
    if t is None:
        raise ValueError(f"{name} declares no tuning grid; benchmarks that do: "
                         + (", ".join(n for n in _tuned()) or "(none)"))
    rows = []
    for variant in t.grids:
        points = t.points(variant)
        for i, point in enumerate(points, 1):
            echo(f"tune {name}/{variant} try {i}/{len(points)}: {json.dumps(point, sort_keys=True)}")
            opts = RunOptions(names=[name], preset=preset, seeds=t.seeds, variants=[variant], overrides=dict(point),
                              extras=False, out=str(Path(out) / "runs"), jobs=jobs, quiet=True)
            run_dir = execute_run(opts, echo=lambda line: None)
            df = read_rows(run_dir / "summary.csv")
            scored = df[(df["variant"] == variant) & (df["metric"] == t.score) & df["step"].isna() & (df["status"] == "ok")]
            errors = df.loc[df["status"] != "ok", "error"].astype(str).tolist()
            for seed in range(t.seeds):
                value = scored.loc[scored["seed"] == seed, "value"]
                rows.append(dict(benchmark=name, preset=preset, variant=variant, point=json.dumps(point, sort_keys=True),
                                 seed=seed, score=float(value.iloc[0]) if len(value) else math.nan,
                                 error=errors[0][:200] if errors and not len(value) else "", run_id=run_dir.name))
    table = pd.DataFrame(rows)
    means = table.groupby(["variant", "point"], sort=False)["score"].agg(["mean", "std", "count"]).reset_index()
    means = means.sort_values(["variant", "mean"], ascending=[True, not t.higher_is_better], na_position="last")
    path = Path(out) / f"{name}-{preset}-tuning.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, table.to_csv(index=False))
    for variant, part in means.groupby("variant", sort=False):
        best = part.iloc[0]
        echo(f"{name}/{variant}: best of {len(part)} tries by {t.score} (mean over {t.seeds} seeds): {best['point']} "
             f"-> {best['mean']:.4f}")
    echo(f"tuning table: {path}")
    return table


def _tuned() -> list[str]:
    from benchmarks.registry import list_benchmarks

    return [n for n in list_benchmarks() if get_benchmark(n).tuning is not None]
