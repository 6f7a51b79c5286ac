"""The statistics every verdict uses (DESIGN.md, "Verdicts: the rules of evidence").

A spec declares its comparisons before the run, as :class:`Comparison` objects: the
method and the baseline, the metric, the kind of claim and the smallest effect that counts
(``delta``, for "better than") or the equivalence margin (``margin``, for "as good as /
close to"), each with its source. :func:`judge` turns a run's rows into a
:class:`Judgement`: the effect (oriented so that a positive value favours the method), its
interval, ``n`` and the decision. The rules:

- **better** (``delta >= 0``): a two-sided 95 % interval for the effect. *Does not hold*
  when its upper end is below ``delta`` (reliably smaller than the claim needs, or worse);
  *holds* when its lower end is above 0 and its upper end is not below ``delta``;
  *inconclusive* otherwise.
- **equivalent** (two one-sided tests at 5 %, i.e. a 90 % interval): *holds* when the
  interval lies inside ``±margin``, *does not hold* when it lies wholly outside,
  *inconclusive* otherwise. A judge of equivalence must first show that the metric
  separates a trained model from its trivial floor by more than the margin
  (``floor_separation``), or the verdict is inconclusive and says so.
- **noninferior** ("at least on par", "loses little", one one-sided test at 5 %: the
  90 % interval's lower end): *holds* when the lower end is above ``-margin``, *does not
  hold* when the upper end is below ``-margin``, *inconclusive* otherwise; the same floor
  condition as equivalence.

Intervals: paired where the design pairs seeds (same seed = same initialisation and data;
Student's t on the per-seed differences), Welch's t otherwise; RL returns use rliable's
interquartile mean with a stratified bootstrap (:func:`iqm_difference`, rliable's definitions),
which gives no interval below ``MIN_BOOTSTRAP_RUNS`` runs. A t-interval needs two values on each
side; with fewer the decision is inconclusive and says so. An inconclusive judgement estimates how many seeds
would decide it (:func:`seeds_to_decide`) from the observed spread.

This module is imported by the specs, so it imports numpy / scipy / pandas only inside the
functions that compute (listing a spec stays light).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

from benchmarks.registry import Verdict

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

CONFIDENCE = 0.95  # two-sided, for "better than"
# A percentile bootstrap over few runs covers far less than its level: over 2 runs it spans the 2 paired differences.
# Simulated with no effect (normal paired differences, 2,000 trials, iqm_difference): the 95 % interval's lower end
# was above 0 in 25 % of trials at 2 runs, 12 % at 3, 7 % at 4, 5 % at 5, 3 % at 6, 2-3.5 % at 8-15 (nominal 2.5 %).
MIN_BOOTSTRAP_RUNS = 6
IQM_BOOTSTRAP = "IQM stratified bootstrap"  # the estimate method that needs MIN_BOOTSTRAP_RUNS runs
TOST_CONFIDENCE = 0.90  # two one-sided tests at 5 % each = a 90 % two-sided interval
POWER = 0.8  # for the number of seeds that would decide a claim
MAX_SEEDS_REPORTED = 200  # beyond this, "no affordable number of seeds"
Kind = Literal["better", "equivalent", "noninferior"]
Status = Literal["holds", "does not hold", "inconclusive"]


# ------------------------------------------------------------------------- declarations
@dataclass(frozen=True)
class Comparison:
    """One comparison a claim makes, declared in the spec before any run.

    ``method`` and ``baseline`` are variant names; ``metric`` a (possibly ``@``-qualified)
    metric, read at ``step`` when given (a curve point). ``kind`` is ``better`` (needs
    ``delta``, the smallest effect that counts, >= 0), ``equivalent`` or ``noninferior``
    (need ``margin`` > 0). ``relative``: the effect is per seed (method - baseline) / |baseline|
    (a FID, whose scale depends on the feature space). ``source`` says where delta or the
    margin comes from (the paper's effect, a scale argument). ``paired``: seeds pair the two
    variants (same seed = same initialisation and data); else Welch.
    """

    method: str
    baseline: str
    metric: str
    kind: Kind = "better"
    delta: float = 0.0
    margin: float = 0.0
    higher_is_better: bool = True
    relative: bool = False
    paired: bool = True
    step: float | None = None
    source: str = ""
    label: str = ""  # a short name for the report (default: "method vs baseline")

    def __post_init__(self) -> None:
        if self.kind not in ("better", "equivalent", "noninferior"):
            raise ValueError(f"comparison kind must be better, equivalent or noninferior; got {self.kind!r}")
        if self.kind == "better" and not self.delta >= 0:
            raise ValueError(f"a 'better' comparison needs delta >= 0; got {self.delta!r}")
        if self.kind != "better" and not self.margin > 0:
            raise ValueError(f"an {self.kind!r} comparison needs a margin > 0; got {self.margin!r}")

    @property
    def name(self) -> str:
        return self.label or f"{self.method} vs {self.baseline}"

    @property
    def confidence(self) -> float:
        return CONFIDENCE if self.kind == "better" else TOST_CONFIDENCE

    @property
    def threshold_text(self) -> str:
        unit = " (relative)" if self.relative else ""
        if self.kind == "better":
            return f"smallest effect {self.delta:.3g}{unit}"
        return f"margin ±{self.margin:.3g}{unit}" if self.kind == "equivalent" else f"margin −{self.margin:.3g}{unit}"


@dataclass(frozen=True)
class Estimate:
    """An effect (positive favours the method) with a two-sided interval at ``confidence``."""

    effect: float
    low: float
    high: float
    n: int  # pairs (paired), or the smaller group (Welch), or runs (bootstrap)
    confidence: float
    method: str  # "paired t", "Welch t", "IQM stratified bootstrap", ...
    sd: float = math.nan  # sd of the per-seed differences (paired), pooled sd (Welch): for seeds_to_decide

    @property
    def finite(self) -> bool:
        return all(math.isfinite(x) for x in (self.effect, self.low, self.high))

    def text(self, fmt: str = "+.3g") -> str:
        if not math.isfinite(self.effect):
            return "n/a"
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return f"{self.effect:{fmt}} (no interval: n = {self.n})"
        return f"{self.effect:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"


@dataclass(frozen=True)
class Judgement:
    """A comparison decided on a run's rows."""

    comparison: Comparison
    estimate: Estimate
    status: Status
    note: str = ""  # why inconclusive (too few seeds, the floor, a competence gate) or extra context
    means: tuple[float, float] = (math.nan, math.nan)  # method, baseline
    seeds_needed: int | None = None  # estimated seeds (pairs) that would decide it, when inconclusive

    def text(self) -> str:
        c, e = self.comparison, self.estimate
        side = f"{c.metric}{'' if c.step is None else f' at {c.step:g}'}: {c.method} {self.means[0]:.4g} vs {c.baseline} {self.means[1]:.4g}"
        what = "relative effect" if c.relative else "effect"
        out = (f"{c.name} ({c.kind}, {c.threshold_text}): {side}; {what} {e.text()} "
               f"({e.confidence:.0%} {e.method}, n = {e.n}) → {self.status}")
        if self.status == "inconclusive" and self.seeds_needed is not None:
            out += (f"; about {self.seeds_needed} seeds would decide it" if self.seeds_needed <= MAX_SEEDS_REPORTED
                    else f"; more than {MAX_SEEDS_REPORTED} seeds would be needed at this spread")
        return out + (f" ({self.note})" if self.note else "")


# ------------------------------------------------------------------------------ intervals
def _t(confidence: float, dof: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, dof))


def paired_t(diffs: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Student's t interval for the mean of per-seed differences."""
    d = [float(x) for x in diffs if math.isfinite(float(x))]
    n = len(d)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, confidence, "paired t")
    mean = sum(d) / n
    if n < 2:
        return Estimate(mean, math.nan, math.nan, n, confidence, "paired t")
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = _t(confidence, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, confidence, "paired t", sd)


def welch_half_width(sd_a: float, n_a: int, sd_b: float, n_b: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of Welch's interval for a difference of two means (Welch–Satterthwaite dof), from
    each side's sd and count; ``compare`` uses it for its bands."""
    v_a, v_b = sd_a**2 / n_a, sd_b**2 / n_b
    se2 = v_a + v_b
    if se2 == 0:
        return 0.0
    parts = [v**2 / (n - 1) for v, n in ((v_a, n_a), (v_b, n_b)) if n > 1]
    dof = se2**2 / sum(parts) if parts and sum(parts) > 0 else max(n_a, n_b) - 1
    return _t(confidence, max(dof, 1.0)) * math.sqrt(se2)


def welch_t(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Welch's t interval for mean(a) - mean(b) (unequal variances)."""
    a = [float(x) for x in a if math.isfinite(float(x))]
    b = [float(x) for x in b if math.isfinite(float(x))]
    if not a or not b:
        return Estimate(math.nan, math.nan, math.nan, min(len(a), len(b)), confidence, "Welch t")
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    n = min(len(a), len(b))
    if n < 2:
        return Estimate(ma - mb, math.nan, math.nan, n, confidence, "Welch t")
    sa = math.sqrt(sum((x - ma) ** 2 for x in a) / (len(a) - 1))
    sb = math.sqrt(sum((x - mb) ** 2 for x in b) / (len(b) - 1))
    half = welch_half_width(sa, len(a), sb, len(b), confidence)
    return Estimate(ma - mb, ma - mb - half, ma - mb + half, n, confidence, "Welch t", math.sqrt((sa**2 + sb**2) / 2))


def iqm(scores: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50 % of runs (rliable's ``aggregate_iqm``,
    ``scipy.stats.trim_mean(scores, 0.25)``)."""
    from scipy import stats

    return float(stats.trim_mean(list(scores), proportiontocut=0.25, axis=None))


def iqm_difference(method: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE,
                   reps: int = 20_000, seed: int = 0) -> Estimate:
    """IQM(method) - IQM(baseline) over runs, with a stratified bootstrap percentile interval.

    Agarwal et al. 2021 (rliable): runs are resampled with replacement within each task (the
    strata; one task here), and the two arrays with the same run indices, since runs of one
    seed share the environment's evaluation seeds (paired). rliable itself is not a
    dependency: its 1.2.0 needs arch < 8, which does not import under pandas 3 (NOTES.md);
    this follows its ``StratifiedBootstrap`` with ``method="percentile"``.
    """
    import numpy as np
    from scipy import stats

    m, b = np.asarray(method, dtype=float), np.asarray(baseline, dtype=float)
    effect = iqm(m) - iqm(b)
    n = min(len(m), len(b))
    sd = float(np.std(m - b, ddof=1)) if len(m) == len(b) and n > 1 else math.nan
    if len(m) != len(b) or n < MIN_BOOTSTRAP_RUNS:  # no interval that holds its level (above)
        return Estimate(effect, math.nan, math.nan, n, confidence, IQM_BOOTSTRAP, sd)
    idx = np.random.default_rng(seed).integers(0, n, size=(reps, n))
    draws = stats.trim_mean(m[idx], 0.25, axis=1) - stats.trim_mean(b[idx], 0.25, axis=1)
    lo, hi = np.quantile(draws, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return Estimate(effect, float(lo), float(hi), n, confidence, IQM_BOOTSTRAP, sd)


def _resampled_midranks(x, counts):
    """Mid-ranks (ties averaged) of the items of ``x`` [P] within each resample, for ``counts`` [R, P] (how often each
    item was drawn): what ``rankdata`` gives on the resampled array, per item, in O(R·P) without building it."""
    import numpy as np

    order = np.argsort(x, kind="stable")
    _, groups, = np.unique(x, return_inverse=True)  # tie groups, numbered in sorted order
    first = np.searchsorted(groups[order], np.arange(groups.max() + 1), side="left")
    last = np.searchsorted(groups[order], np.arange(groups.max() + 1), side="right") - 1
    cum = np.cumsum(counts[:, order], axis=1)
    below = np.where(first > 0, cum[:, np.maximum(first - 1, 0)], 0.0)  # [R, G]: drawn items of lower value
    within = cum[:, last] - below  # [R, G]: drawn items tied with the group
    return (below + (within + 1) / 2)[:, groups]


def _weighted_corr(a, b, w):
    """Pearson correlation of a and b [R, P] with item weights w [R, P], per row."""
    n = w.sum(-1, keepdims=True)
    da = a - (w * a).sum(-1, keepdims=True) / n
    db = b - (w * b).sum(-1, keepdims=True) / n
    return (w * da * db).sum(-1) / ((w * da * da).sum(-1) * (w * db * db).sum(-1)) ** 0.5


def rank_correlation_difference(sets: Sequence[tuple[Sequence[Sequence[float]], Sequence[Sequence[float]], Sequence[float]]],
                                confidence: float = TOST_CONFIDENCE, reps: int = 4000, seed: int = 0,
                                resample_seeds: bool = True) -> Estimate:
    """Mean over evaluation sets and seeds of Spearman ρ(method) − ρ(baseline) against human scores, with a paired
    bootstrap percentile interval over items and seeds.

    ``sets``: per set, (method scores [seeds, items], baseline scores [seeds, items], human scores [items]); row s of
    both arrays is seed s (paired). Each replicate resamples the seeds (one draw, shared by every set) and, per set, the
    items (one draw, shared by both methods and every seed: the same word pairs are scored by all), and recomputes
    every ρ on the resampled items, ties (repeated items, equal scores) at their average rank. With
    ``resample_seeds=False`` only the items are resampled: the part of the interval that more seeds cannot narrow.
    """
    import numpy as np
    from scipy import stats

    data = [(np.asarray(m, float), np.asarray(b, float), np.asarray(h, float)) for m, b, h in sets]
    if not data or any(m.shape != b.shape or m.ndim != 2 or m.shape[1] != len(h) for m, b, h in data):
        raise ValueError("rank_correlation_difference needs, per set, method and baseline scores of the same shape "
                         "[seeds, items] and one human score per item")
    n = data[0][0].shape[0]
    if any(m.shape[0] != n for m, _, _ in data):
        raise ValueError("every set needs the same seeds")
    per_seed_diff = np.mean([[stats.spearmanr(m[s], h).statistic - stats.spearmanr(b[s], h).statistic
                              for s in range(n)] for m, b, h in data], axis=0)
    effect = float(per_seed_diff.mean())
    sd = float(per_seed_diff.std(ddof=1)) if n > 1 else math.nan
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n, size=(reps, n)) if resample_seeds else np.broadcast_to(np.arange(n), (reps, n))
    total = np.zeros(reps)
    for m, b, h in data:
        counts = np.stack([np.bincount(row, minlength=len(h)) for row in rng.integers(0, len(h), size=(reps, len(h)))])
        counts = counts.astype(float)
        rh = _resampled_midranks(h, counts)
        gap = np.stack([_weighted_corr(_resampled_midranks(m[s], counts), rh, counts)
                        - _weighted_corr(_resampled_midranks(b[s], counts), rh, counts) for s in range(n)], axis=1)
        total += np.take_along_axis(gap, seeds, axis=1).mean(axis=1)  # [reps]: the replicate's seeds
    draws = total / len(data)
    lo, hi = np.quantile(draws, [0.5 - confidence / 2, 0.5 + confidence / 2])
    what = "paired bootstrap over items and seeds" if resample_seeds else "paired bootstrap over items"
    return Estimate(effect, float(lo), float(hi), n, confidence, what, sd)


# ------------------------------------------------------------------------------ decisions
def decide(kind: Kind, estimate: Estimate, delta: float = 0.0, margin: float = 0.0) -> Status:
    """The rule of the module docstring for one estimate (already at the kind's confidence)."""
    if not estimate.finite:
        return "inconclusive"
    lo, hi = estimate.low, estimate.high
    if kind == "better":
        if hi < delta:
            return "does not hold"
        return "holds" if lo > 0 else "inconclusive"
    if kind == "equivalent":
        if -margin < lo and hi < margin:
            return "holds"
        return "does not hold" if (lo > margin or hi < -margin) else "inconclusive"
    if kind == "noninferior":
        if lo > -margin:
            return "holds"
        return "does not hold" if hi < -margin else "inconclusive"
    raise ValueError(f"unknown comparison kind {kind!r}")


def seeds_to_decide(kind: Kind, effect: float, sd: float, delta: float = 0.0, margin: float = 0.0,
                    confidence: float | None = None, power: float = POWER, limit: int = 10_000) -> int | None:
    """Paired seeds at which an effect of the observed size, with the observed per-seed sd,
    would be decided with probability ``power`` (t approximation): the smallest n whose
    interval half-width plus the power quantile's share is below the distance from the
    effect to the nearest decision boundary. None when the spread is unknown (one seed)."""
    if not (math.isfinite(effect) and math.isfinite(sd)) or sd < 0:
        return None
    conf = confidence or (CONFIDENCE if kind == "better" else TOST_CONFIDENCE)
    if kind == "better":  # decided once the upper end is below delta or the lower end above 0
        distance = max(effect, delta - effect)
    elif kind == "equivalent":
        distance = abs(margin - abs(effect))
    else:
        distance = abs(effect + margin)
    if sd == 0:
        return 2
    if distance == 0:
        return limit + 1
    for n in range(2, limit + 1):
        if (_t(conf, n - 1) + _t(2 * power - 1, n - 1)) * sd / math.sqrt(n) < distance:
            return n
    return limit + 1


# ------------------------------------------------------------------------------- rows
def per_seed(df: pd.DataFrame, variant: str, metric: str, step: float | None = None) -> dict[int, float]:
    """seed -> value of one variant's metric (the mean where a seed has several rows)."""
    rows = df[(df["variant"] == variant) & (df["metric"] == metric)]
    if step is None:
        rows = rows[rows["step"].isna()]
    else:
        rows = rows[rows["step"].astype(float).sub(step).abs() < 1e-12]
    rows = rows[rows["value"].astype(float).notna()]
    return {int(s): float(v) for s, v in rows.groupby("seed")["value"].mean().items()}


def seed_stats(df: pd.DataFrame, variant: str, metric: str, step: float | None = None) -> tuple[float, float, int]:
    """Mean, sample std (0 for one seed) and count over seeds of one variant's metric."""
    values = list(per_seed(df, variant, metric, step).values())
    if not values:
        return math.nan, math.nan, 0
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((x - mean) ** 2 for x in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, sd, len(values)


def estimate(c: Comparison, m: dict[int, float], b: dict[int, float]) -> Estimate:
    """The comparison's effect and interval from per-seed values (oriented: positive favours the method)."""
    sign = 1.0 if c.higher_is_better else -1.0
    if c.paired:
        common = sorted(set(m) & set(b))
        diffs = []
        for s in common:
            d = sign * (m[s] - b[s])
            diffs.append(d / abs(b[s]) if c.relative and b[s] != 0 else (math.nan if c.relative else d))
        return paired_t(diffs, c.confidence)
    if c.relative:
        mb = sum(b.values()) / len(b) if b else math.nan
        scale = abs(mb) if mb else math.nan
        return welch_t([sign * x / scale for x in m.values()], [sign * x / scale for x in b.values()], c.confidence)
    return welch_t([sign * x for x in m.values()], [sign * x for x in b.values()], c.confidence)


def judge_values(c: Comparison, m: dict[int, float], b: dict[int, float], note: str = "") -> Judgement:
    """Decide ``c`` on per-seed values (seed -> value) of the method and the baseline."""
    est = estimate(c, m, b)
    return judgement(c, est, means=(_mean(m.values()), _mean(b.values())), note=note)


def judgement(c: Comparison, est: Estimate, means: tuple[float, float] = (math.nan, math.nan), note: str = "",
              status: Status | None = None) -> Judgement:
    """A Judgement from an estimate made elsewhere (a bootstrap), with the seeds estimate."""
    decided = status or decide(c.kind, est, c.delta, c.margin)
    notes = [note] if note else []
    bootstrap = est.method == IQM_BOOTSTRAP  # (a bootstrap over items, as flyvec's, has its own interval at any n)
    least = MIN_BOOTSTRAP_RUNS if bootstrap else 2
    if est.n < least and math.isfinite(est.effect):
        notes.append(f"{est.n} paired value(s): no interval; a {'bootstrap' if bootstrap else 't'} interval needs at "
                     f"least {least}")
    needed = None
    if decided == "inconclusive" and math.isfinite(est.effect) and math.isfinite(est.sd):
        needed = seeds_to_decide(c.kind, est.effect, est.sd, c.delta, c.margin, est.confidence)
        needed = max(needed, least) if needed is not None else None
    return Judgement(c, est, decided, "; ".join(notes), means, needed)


def judge(df: pd.DataFrame, c: Comparison, note: str = "") -> Judgement:
    """Decide a declared comparison on a benchmark's ok rows."""
    return judge_values(c, per_seed(df, c.method, c.metric, c.step), per_seed(df, c.baseline, c.metric, c.step), note)


def gate(j: Judgement, passed: bool, why: str) -> Judgement:
    """Make ``j`` inconclusive (keeping its interval) when a competence or floor condition fails."""
    if passed:
        return j
    return replace(j, status="inconclusive", note="; ".join(filter(None, [j.note, why])), seeds_needed=None)


def _separation(model: dict[int, float] | Iterable[float], floor: dict[int, float] | Iterable[float],
                higher_is_better: bool) -> Estimate:
    """model - floor (oriented), paired by seed where both are keyed by seed, else Welch; 95 %."""
    sign = 1.0 if higher_is_better else -1.0
    if isinstance(model, dict) and isinstance(floor, dict) and set(model) & set(floor):
        return paired_t([sign * (model[s] - floor[s]) for s in sorted(set(model) & set(floor))])
    mv = list(model.values()) if isinstance(model, dict) else list(model)
    fv = list(floor.values()) if isinstance(floor, dict) else list(floor)
    return welch_t([sign * x for x in mv], [sign * x for x in fv])


def floor_separation(model: dict[int, float] | Iterable[float], floor: dict[int, float] | Iterable[float],
                     margin: float, higher_is_better: bool = True) -> tuple[bool, str]:
    """Does the metric separate a trained model from its trivial floor by more than the margin?

    Uses the same 95 % interval as a "better" claim with delta = margin: the lower end of
    (model - floor) must exceed the margin. When it does not, the text says how many seeds would
    show it at the observed spread (:func:`seeds_to_separate`)."""
    est = _separation(model, floor, higher_is_better)
    ok = est.finite and est.low > margin
    text = f"model − floor {est.text()} vs margin {margin:.3g}: {'separates' if ok else 'does not separate'}"
    n = None if ok else seeds_to_separate(model, floor, margin, higher_is_better)
    return ok, text + (f" (about {n} seeds would show it)" if n is not None and n <= MAX_SEEDS_REPORTED else "")


def seeds_to_separate(model: dict[int, float] | Iterable[float], floor: dict[int, float] | Iterable[float],
                      margin: float, higher_is_better: bool = True) -> int | None:
    """Seeds at which model - floor would be shown above the margin at the observed spread (None: not estimable,
    or the observed separation is not above the margin, so more seeds would not show it)."""
    est = _separation(model, floor, higher_is_better)
    if not (math.isfinite(est.effect) and math.isfinite(est.sd)) or est.effect <= margin:
        return None
    return seeds_to_decide("better", est.effect - margin, est.sd)


def combine(judgements: Sequence[Judgement], rule: Literal["all", "any"] = "all") -> Status:
    """"all": holds when every judgement holds, does not hold when any does not (an
    intersection-union test: each at its own level, no correction needed); "any" is its dual."""
    statuses = [j.status for j in judgements]
    if not statuses:
        return "inconclusive"
    if rule == "all":
        if "does not hold" in statuses:
            return "does not hold"
        return "holds" if all(s == "holds" for s in statuses) else "inconclusive"
    if "holds" in statuses:
        return "holds"
    return "does not hold" if all(s == "does not hold" for s in statuses) else "inconclusive"


def make_verdict(status: Status, judgements: Sequence[Judgement], evidence: str = "") -> Verdict:
    """A Verdict whose evidence starts with every judgement's interval, then ``evidence``."""
    parts = [j.text() for j in judgements]
    if evidence:
        parts.append(evidence)
    return Verdict(status, "; ".join(parts), tuple(judgements))


def _mean(values: Iterable[float]) -> float:
    v = [x for x in values if math.isfinite(x)]
    return sum(v) / len(v) if v else math.nan


# ---------------------------------------------------------------------- the default rule
@dataclass(frozen=True)
class DefaultRule:
    comparison: Comparison

    def __call__(self, df: pd.DataFrame) -> Verdict:
        j = judge(df, self.comparison)
        return make_verdict(j.status, [j])


def primary_vs_baseline(method: str, baseline: str, metric: str, higher_is_better: bool = True, delta: float = 0.0,
                        source: str = "any gain counts") -> DefaultRule:
    """The default rule: the method is better than the baseline on one metric (paired by seed)."""
    return DefaultRule(Comparison(method, baseline, metric, "better", delta=delta, higher_is_better=higher_is_better,
                                  source=source))


__all__ = [
    "Comparison", "Estimate", "Judgement", "paired_t", "welch_t", "welch_half_width", "iqm_difference", "decide",
    "seeds_to_decide", "iqm", "per_seed", "seed_stats", "judge", "judge_values", "judgement", "gate", "floor_separation", "seeds_to_separate",
    "combine", "make_verdict", "primary_vs_baseline",
]

