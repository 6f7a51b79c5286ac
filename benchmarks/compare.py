"""Compare a run against stored results with noise-aware bands (DESIGN.md, "Compare").

For every (benchmark, variant, dataset, preset, metric) present in both (ok rows, scalar
metrics; curve points are not compared), the band is the wider of two: a 95 % interval for
the difference of the two means (Welch's t over each side's seeds, so it is wide when either
side has few; a side with one value borrows the other side's spread) and the metric's declared
relative tolerance of the stored value, which is set to cover what moves between machines of
this kind (the same commit on an Intel and an AMD CPU) and seeds. So a band is never narrower
than the tolerance, and a shift of several tolerances is always a regression. Quality metrics
outside the band in the bad direction are regressions (exit 1);
efficiency metrics are compared only when the hardware matches; info metrics (a parameter
count) are reported as changed or not. Rows present on one side only are listed.

A quality metric of the reference that the run failed to measure is a regression too, with
its reason: the run's unit of that variant failed (status error), its value is not finite,
or it is missing although the run ran that benchmark on the same dataset and preset (a
renamed metric or variant). A seed the reference has and the run lacks, for a quality metric
the run does have, is a regression too ("missing in the run (seed 0)"); a run with fewer seeds
on purpose says so with both counts, and ``allow_fewer_seeds`` accepts it (the run's own seeds
are compared). Two sides with nothing in common are bad input
(:class:`BadResultsError`, exit 2), with a line saying what each side holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from benchmarks.registry import UnknownNameError, get_benchmark
from benchmarks.results import KEY, BadResultsError, is_fast_dev

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


def band(old: pd.Series, new: pd.Series, tolerance: float, confidence: float = 0.95) -> tuple[float, str]:
    """The comparison band and its basis: the wider of Welch's interval half-width for mean(new) - mean(old)
    and ``tolerance`` x |mean(old)|. A side with a single value takes the other side's standard deviation."""
    from benchmarks.verdict import welch_half_width

    n_old, n_new = len(old), len(new)
    s_old = float(old.std(ddof=1)) if n_old > 1 else math.nan
    s_new = float(new.std(ddof=1)) if n_new > 1 else math.nan
    known = [s for s in (s_old, s_new) if math.isfinite(s)]
    half = 0.0
    if known:
        half = welch_half_width(s_new if math.isfinite(s_new) else max(known), n_new,
                                s_old if math.isfinite(s_old) else max(known), n_old, confidence)
    floor = tolerance * abs(float(old.mean()))
    if half > floor:
        return max(half, 1e-12), f"seeds {n_new}/{n_old} (95 %)"
    return max(floor, 1e-12), f"±{tolerance:.0%}"


def _seed_set(values: pd.DataFrame) -> set[int]:
    return {int(x) for x in values["seed"].dropna()}


def _missing_seeds(key: tuple, old: pd.DataFrame, new: pd.DataFrame, run: pd.DataFrame, ref: pd.DataFrame,
                   allow_fewer_seeds: bool) -> str:
    """Why seeds of the reference are absent from the run's rows of this metric ('' when none are, or when a
    run with fewer seeds on purpose is accepted)."""
    missing = sorted(_seed_set(old) - _seed_set(new))
    if not missing:
        return ""
    b, _, d, p, _ = key

    def bench_seeds(df: pd.DataFrame) -> set[int]:
        return _seed_set(df[(df["benchmark"] == b) & (df["dataset"] == d) & (df["preset"] == p) & (df["role"] != "extra")])

    run_seeds, ref_seeds = bench_seeds(run), bench_seeds(ref)
    never_ran = set(missing) <= ref_seeds - run_seeds  # seeds the run did not run at all for this benchmark
    listed = ", ".join(map(str, missing))
    if never_ran and allow_fewer_seeds:
        return ""
    if never_ran and len(run_seeds) < len(ref_seeds):
        return (f"missing in the run (seed {listed}): the run has {len(run_seeds)} seed(s) of {b}, the reference "
                f"{len(ref_seeds)} (--allow-fewer-seeds accepts fewer on purpose)")
    return f"missing in the run (seed {listed})"


def compare(run: pd.DataFrame, ref: pd.DataFrame, allow_fewer_seeds: bool = False) -> Comparison:
    """Compare ``run`` with ``ref`` (both in the results schema, as :func:`read_results` returns).

    A quality metric of the reference (ok, finite) is a regression, with its reason, when the
    run measured it worse beyond the band, or when the run's unit of that variant failed, or
    its value is not finite, or it is missing although the run ran that benchmark (same
    dataset and preset). A benchmark the run did not run at all is listed as only in the
    reference. Raises :class:`BadResultsError` when the two share nothing to compare.
    """
    for df, what in ((ref, "the reference"), (run, "the run")):
        if is_fast_dev(df):
            raise BadResultsError(f"{what} holds fast dev run rows (--fast-dev-run: one or two batches per stage, "
                                  f"maybe on stand-in data); they prove a code path and are not results to compare")
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
        covered = (str(key[0]), str(key[2]), str(key[3])) in ran
        reason = ""
        if new_any is None and not covered:
            continue  # the run did not run this benchmark at all: listed as only in the reference
        if kind == "quality":
            if new is None or len(new) < len(new_any) or _failed_here(key, failed):
                reason = _why_missing(key, failed, new_any)
            else:
                reason = _missing_seeds(key, old, new, run, ref, allow_fewer_seeds)
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
        width, basis = band(old["value"], new["value"], tol)
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


NOTEWORTHY = ("REGRESSED", "improved")  # the rows printed without --all (failed and missing ones are REGRESSED)


def render(c: Comparison, show_all: bool = False) -> str:
    """Every row with ``show_all``; else the rows that regressed (failed or missing included) or improved
    beyond their band, the failed units, what is on one side only, and one line of counts per verdict."""
    out = []
    t = c.table.copy() if show_all else c.table[c.table["verdict"].isin(NOTEWORTHY)].copy()
    for col in ("stored", "new", "delta", "band"):
        t[col] = t[col].map(lambda v: f"{v:.4g}")
    if not t.empty:
        out.append(t[[*KEY, "stored", "new", "delta", "band", "basis", "verdict"]].to_string(index=False))
    elif not show_all:
        out.append("nothing regressed, failed, went missing or moved beyond its band")
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
            out.append(f"{label} ({len(frame)}):" if show_all or len(frame) <= 20 else
                       f"{label} ({len(frame)}; --all lists them)")
            if show_all or len(frame) <= 20:
                out.append(frame.to_string(index=False))
    if c.context is not None and not c.context.empty:
        out.append(f"context in the reference, not judged ({len(c.context)}):")
        out += [f"  {r.benchmark}/{r.variant} {r.metric} ({r.dataset}): paper {r.stored:.4g}"
                + (f", run {r.new:.4g}" if pd.notna(r.new) else "") + f" [{r.source}]" for r in c.context.itertuples()]
    counts = c.table["verdict"].value_counts().to_dict()
    out.append(f"compared {len(c.table)} rows: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return "\n".join(out)
