"""Compare a run against stored results with noise-aware bands (DESIGN.md, "Compare").

For every (benchmark, variant, dataset, preset, metric) present in both (ok rows, scalar
metrics; curve points are not compared), the band is two pooled standard deviations over
seeds where a side has several seeds, else the metric's relative tolerance of the stored
value. Quality metrics outside the band in the bad direction are regressions (exit 1);
efficiency metrics are compared only when the hardware matches; info metrics (a parameter
count) are reported as changed or not. Rows present on one side only are listed.

A quality metric of the reference that the run failed to measure is a regression too, with
its reason: the run's unit of that variant failed (status error), its value is not finite,
or it is missing although the run ran that benchmark on the same dataset and preset (a
renamed metric or variant). Two sides with nothing in common are bad input
(:class:`BadResultsError`, exit 2), with a line saying what each side holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from benchmarks.registry import UnknownNameError, get_benchmark
from benchmarks.results import KEY, BadResultsError

DEFAULT_TOLERANCE = {"quality": 0.05, "efficiency": 0.25, "info": 0.0}
HARDWARE = ["accelerator", "devices", "device_name"]


@dataclass
class Comparison:
    table: pd.DataFrame
    only_run: pd.DataFrame
    only_ref: pd.DataFrame
    failed: pd.DataFrame | None = None  # the run's failed units (benchmark, variant, dataset, preset, seed, error)
    context: pd.DataFrame | None = None  # the reference's scope=context rows (paper.csv): listed, never judged

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


def _scalar(df: pd.DataFrame) -> pd.DataFrame:
    """Scalar measurements (curve points are plotted, not compared) of any status."""
    return df[df["step"].isna() & df["metric"].notna() & (df["metric"].astype(str) != "")]


def _hardware(df: pd.DataFrame) -> set[tuple]:
    return set(map(tuple, df[HARDWARE].astype(str).drop_duplicates().to_numpy()))


def _sorted_keys(keys) -> list[tuple]:
    return sorted(keys, key=lambda k: tuple(map(str, k)))


def _seeds(values: pd.DataFrame) -> str:
    seeds = [str(int(s)) if pd.notna(s) else "?" for s in values["seed"]]
    return "seed " + ", ".join(seeds) if seeds else ""


def _failures(run: pd.DataFrame) -> pd.DataFrame:
    """The run's failed units: one error row each (metric empty)."""
    failed = run[run["status"] != "ok"]
    return failed[["benchmark", "variant", "dataset", "preset", "seed", "error"]].drop_duplicates()


def _why_missing(key: tuple, failed: pd.DataFrame, new_any: pd.DataFrame | None) -> str:
    """The reason a reference quality metric has no usable value in the run."""
    b, v, d, p, _ = key
    mine = failed[(failed["benchmark"] == b) & (failed["variant"] == v) & (failed["dataset"] == d) & (failed["preset"] == p)]
    if not mine.empty:
        first = mine.iloc[0]
        return f"failed ({_seeds(mine)}): {str(first['error'])[-300:]}"
    if new_any is not None and not new_any.empty:
        bad = new_any[~new_any["value"].map(lambda x: math.isfinite(x) if pd.notna(x) else False)]
        if not bad.empty:
            return f"non-finite value {bad['value'].iloc[0]} ({_seeds(bad)})"
    others = failed[(failed["benchmark"] == b) & (failed["dataset"] == d) & (failed["preset"] == p)]
    units = ", ".join(sorted(set(others["variant"].astype(str))))
    return "missing in the run" + (f" (failed units of {b}: {units})" if units else "")


def compare(run: pd.DataFrame, ref: pd.DataFrame) -> Comparison:
    """Compare ``run`` with ``ref`` (both in the results schema, as :func:`read_results` returns).

    A quality metric of the reference (ok, finite) is a regression, with its reason, when the
    run measured it worse beyond the band, or when the run's unit of that variant failed, or
    its value is not finite, or it is missing although the run ran that benchmark (same
    dataset and preset). A benchmark the run did not run at all is listed as only in the
    reference. Raises :class:`BadResultsError` when the two share nothing to compare.
    """
    ref, context = _split_scope(ref, run)
    failed = _failures(run)
    run_s, ref_s = _scalar(run), _scalar(ref)
    ok_run = run_s[run_s["status"] == "ok"]
    ok_ref = ref_s[(ref_s["status"] == "ok") & ref_s["value"].map(_finite)]
    groups_run = dict(list(ok_run.groupby(KEY, sort=True)))
    groups_ref = dict(list(ok_ref.groupby(KEY, sort=True)))
    keys_ref_ok = set(ref_s[ref_s["status"] == "ok"].groupby(KEY).groups) if not ref_s.empty else set()
    ran = set(map(tuple, run[["benchmark", "dataset", "preset"]].astype(str).to_numpy()))  # what the run covered
    rows = []
    for key in _sorted_keys(groups_ref):
        old = groups_ref[key]
        kind, tol = _metric_info(key[0], key[4])
        new_any = groups_run.get(key)
        new = new_any[new_any["value"].map(_finite)] if new_any is not None else None
        hib = old["higher_is_better"].dropna()
        higher_is_better = bool(hib.iloc[0]) if not hib.empty else True
        m_old = old["value"].mean()
        s_old = old["value"].std(ddof=1) if len(old) > 1 else math.nan
        covered = (str(key[0]), str(key[2]), str(key[3])) in ran
        reason = ""
        if new_any is None and not covered:
            continue  # the run did not run this benchmark at all: listed as only in the reference
        if kind == "quality":
            if new is None or len(new) < len(new_any) or _failed_here(key, failed):
                reason = _why_missing(key, failed, new_any)
        elif new is None or new.empty:
            if new_any is None:
                continue  # efficiency and info metrics: missing ones are listed, not judged
        if reason:
            m_new = new["value"].mean() if new is not None and not new.empty else math.nan
            rows.append(dict(zip(KEY, key), kind=kind, stored=m_old, new=m_new, delta=m_new - m_old, band=math.nan,
                             basis="", n_stored=len(old), n_new=0 if new is None else len(new), verdict="REGRESSED",
                             reason=reason))
            continue
        if new is None or new.empty:
            rows.append(dict(zip(KEY, key), kind=kind, stored=m_old, new=math.nan, delta=math.nan, band=math.nan,
                             basis="", n_stored=len(old), n_new=0, verdict="not compared (no finite value)", reason=""))
            continue
        m_new = new["value"].mean()
        s_new = new["value"].std(ddof=1) if len(new) > 1 else math.nan
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
            reason = f"{'lower' if higher_is_better else 'higher'} by {abs(delta):.4g}, beyond the band ±{width:.3g}" \
                if kind == "quality" else ""
        else:
            verdict = "improved"
        rows.append(dict(zip(KEY, key), kind=kind, stored=m_old, new=m_new, delta=delta, band=width, basis=basis,
                         n_stored=len(old), n_new=len(new), verdict=verdict, reason=reason))
    table = pd.DataFrame(rows, columns=[*KEY, *COLUMNS])
    if table.empty:
        raise BadResultsError(_nothing_shared(run_s, ref_s))
    compared = set(map(tuple, table[KEY].to_numpy()))
    keys_run = set(groups_run)
    keys_ref = set(groups_ref) - compared
    only_run = pd.DataFrame(_sorted_keys(keys_run - keys_ref_ok), columns=KEY)
    only_ref = pd.DataFrame(_sorted_keys(keys_ref), columns=KEY)
    return Comparison(table, only_run, only_ref, failed.reset_index(drop=True), context)


def _split_scope(ref: pd.DataFrame, run: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A reference with a ``scope`` column (paper.csv): its target rows, to judge, and its context rows
    (another model size, pre-training, split or variant mapping), listed beside the run's mean if any."""
    if "scope" not in ref.columns:
        return ref, pd.DataFrame(columns=[*KEY, "stored", "new", "source"])
    is_context = ref["scope"].astype(str) == "context"
    ctx = ref[is_context]
    ok = run[(run["status"] == "ok") & run["step"].isna()]
    means = ok.groupby(KEY)["value"].mean().to_dict() if not ok.empty else {}
    rows = [dict(zip(KEY, key), stored=r["value"], new=means.get(key, math.nan), source=r.get("source", ""))
            for key, r in ((tuple(r[k] for k in KEY), r) for _, r in ctx.iterrows())]
    return ref[~is_context], pd.DataFrame(rows, columns=[*KEY, "stored", "new", "source"])


COLUMNS = ["kind", "stored", "new", "delta", "band", "basis", "n_stored", "n_new", "verdict", "reason"]


def _finite(x) -> bool:
    return bool(pd.notna(x) and math.isfinite(x))


def _failed_here(key: tuple, failed: pd.DataFrame) -> bool:
    b, v, d, p, _ = key
    return bool(((failed["benchmark"] == b) & (failed["variant"] == v) & (failed["dataset"] == d)
                 & (failed["preset"] == p)).any())


def _nothing_shared(run: pd.DataFrame, ref: pd.DataFrame) -> str:
    """One line saying what each side holds, by the first key column whose values differ."""
    def values(df: pd.DataFrame, col: str) -> list[str]:
        return sorted(set(df[col].dropna().astype(str)))

    def show(vals: list[str]) -> str:
        return ", ".join(vals[:4]) + (f" and {len(vals) - 4} more" if len(vals) > 4 else "") if vals else "nothing"

    head = "no (benchmark, variant, dataset, preset, metric) in common with the reference"
    if ref.empty or run.empty:
        side = "reference" if ref.empty else "run"
        return f"{head}: the {side} has no scalar measurements"
    for col in ("preset", "benchmark", "dataset", "variant", "metric"):
        a, b = values(ref, col), values(run, col)
        if a != b:
            return f"{head}: reference is {col} {show(a)}, run is {col} {show(b)}"
    return f"{head}: the reference's rows have no ok, finite values"


def render(c: Comparison) -> str:
    out = []
    t = c.table.copy()
    for col in ("stored", "new", "delta", "band"):
        t[col] = t[col].map(lambda v: f"{v:.4g}")
    out.append(t[[*KEY, "stored", "new", "delta", "band", "basis", "verdict"]].to_string(index=False))
    counts = c.table["verdict"].value_counts().to_dict()
    out.append("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    regressed = c.table[c.table["verdict"] == "REGRESSED"]
    if not regressed.empty:
        out.append(f"regressed ({len(regressed)}):")
        out += [f"  {r.benchmark}/{r.variant} {r.metric} ({r.dataset}, {r.preset}): {r.reason}"
                for r in regressed.itertuples()]
    if c.failed is not None and not c.failed.empty:
        out.append(f"failed units in the run ({len(c.failed)}):")
        out += [f"  {r.benchmark}/{r.variant} seed {'' if pd.isna(r.seed) else int(r.seed)}: {str(r.error)[-200:]}"
                for r in c.failed.itertuples()]
    for label, frame in (("only in the run", c.only_run), ("only in the reference", c.only_ref)):
        if not frame.empty:
            out.append(f"{label} ({len(frame)}):")
            out.append(frame.to_string(index=False))
    if c.context is not None and not c.context.empty:
        out.append(f"context in the reference, not judged ({len(c.context)}):")
        out += [f"  {r.benchmark}/{r.variant} {r.metric} ({r.dataset}): paper {r.stored:.4g}"
                + (f", run {r.new:.4g}" if pd.notna(r.new) else "") + f" [{r.source}]" for r in c.context.itertuples()]
    return "\n".join(out)
