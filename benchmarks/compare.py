"""Compare a run against stored results with noise-aware bands (DESIGN.md, "Compare").

For every (benchmark, variant, dataset, preset, metric) present in both (ok rows, scalar
metrics; curve points are not compared), the band is two pooled standard deviations over
seeds where a side has several seeds, else the metric's relative tolerance of the stored
value. Quality metrics outside the band in the bad direction are regressions (exit 1);
efficiency metrics are compared only when the hardware matches; info metrics (a parameter
count) are reported as changed or not. Rows present on one side only are listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from benchmarks.registry import UnknownNameError, get_benchmark
from benchmarks.results import KEY

DEFAULT_TOLERANCE = {"quality": 0.05, "efficiency": 0.25, "info": 0.0}
HARDWARE = ["accelerator", "devices", "device_name"]


@dataclass
class Comparison:
    table: pd.DataFrame
    only_run: pd.DataFrame
    only_ref: pd.DataFrame

    @property
    def regressed(self) -> bool:
        return bool((self.table["verdict"] == "REGRESSED").any()) if not self.table.empty else False


def _metric_info(benchmark: str, metric: str) -> tuple[str, float]:
    try:
        m = get_benchmark(benchmark).metric(metric)
    except UnknownNameError:
        m = None
    kind = m.kind if m else "quality"
    return kind, (m.tolerance if m else DEFAULT_TOLERANCE[kind])


def _scalar_ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["status"] == "ok") & df["step"].isna() & df["metric"].notna() & (df["metric"].astype(str) != "")]


def _hardware(df: pd.DataFrame) -> set[tuple]:
    return set(map(tuple, df[HARDWARE].astype(str).drop_duplicates().to_numpy()))


def compare(run: pd.DataFrame, ref: pd.DataFrame) -> Comparison:
    run, ref = _scalar_ok(run), _scalar_ok(ref)
    groups_run = dict(list(run.groupby(KEY, sort=True)))
    groups_ref = dict(list(ref.groupby(KEY, sort=True)))
    rows = []
    for key in sorted(set(groups_run) & set(groups_ref), key=lambda k: tuple(map(str, k))):
        new, old = groups_run[key], groups_ref[key]
        kind, tol = _metric_info(key[0], key[4])
        hib = new["higher_is_better"].dropna()
        higher_is_better = bool(hib.iloc[0]) if not hib.empty else True
        m_new, m_old = new["value"].mean(), old["value"].mean()
        s_new = new["value"].std(ddof=1) if len(new) > 1 else math.nan
        s_old = old["value"].std(ddof=1) if len(old) > 1 else math.nan
        spreads = [s for s in (s_new, s_old) if not math.isnan(s)]
        rel = tol * abs(m_old)
        if spreads:
            width = max(2 * math.sqrt(sum(s**2 for s in spreads) / len(spreads)), 0.1 * rel, 1e-12)
            basis = "seeds"
        else:
            width = max(rel, 1e-12)
            basis = f"±{tol:.0%}"
        delta = m_new - m_old
        worse = -delta if higher_is_better else delta
        if kind == "efficiency" and _hardware(new) != _hardware(old):
            verdict = "not compared (hardware differs)"
        elif abs(delta) <= width:
            verdict = "same"
        elif kind == "info":
            verdict = "changed"
        elif worse > 0:
            verdict = "REGRESSED" if kind == "quality" else "slower/worse"
        else:
            verdict = "improved"
        rows.append(dict(zip(KEY, key), kind=kind, stored=m_old, new=m_new, delta=delta, band=width, basis=basis,
                         n_stored=len(old), n_new=len(new), verdict=verdict))
    keys_run, keys_ref = set(groups_run), set(groups_ref)
    only_run = pd.DataFrame(sorted(keys_run - keys_ref, key=lambda k: tuple(map(str, k))), columns=KEY)
    only_ref = pd.DataFrame(sorted(keys_ref - keys_run, key=lambda k: tuple(map(str, k))), columns=KEY)
    return Comparison(pd.DataFrame(rows), only_run, only_ref)


def render(c: Comparison) -> str:
    out = []
    if c.table.empty:
        out.append("no (benchmark, variant, dataset, preset, metric) in common")
    else:
        t = c.table.copy()
        for col in ("stored", "new", "delta", "band"):
            t[col] = t[col].map(lambda v: f"{v:.4g}")
        out.append(t[[*KEY, "stored", "new", "delta", "band", "basis", "verdict"]].to_string(index=False))
        counts = c.table["verdict"].value_counts().to_dict()
        out.append("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for label, frame in (("only in the run", c.only_run), ("only in the reference", c.only_ref)):
        if not frame.empty:
            out.append(f"{label} ({len(frame)}):")
            out.append(frame.to_string(index=False))
    return "\n".join(out)
