"""Rules that decide a paper's claim from a run's rows, beyond the spread over seeds."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from benchmarks.registry import Verdict

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

MIN_BAND = 0.01  # when one seed gives no spread: differences under 1 point are inconclusive


def seed_stats(df: pd.DataFrame, variant: str, metric: str, step: float | None = None) -> tuple[float, float, int]:
    """Mean, sample std (0 for one seed) and count over seeds of one variant's metric."""
    rows = df[(df["variant"] == variant) & (df["metric"] == metric)]
    if step is None:
        rows = rows[rows["step"].isna()]
    else:
        rows = rows[rows["step"].astype(float).sub(step).abs() < 1e-12]
    values = rows["value"].astype(float)
    if values.empty:
        return math.nan, math.nan, 0
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, int(len(values))


def band(std_a: float, std_b: float, min_band: float = MIN_BAND) -> float:
    """Two pooled standard deviations over seeds, at least ``min_band``."""
    pooled = math.sqrt((std_a**2 + std_b**2) / 2)
    return max(2 * pooled, min_band)


def primary_vs_baseline(
    method: str, baseline: str, metric: str, higher_is_better: bool = True, min_band: float = MIN_BAND
):
    """The default rule: the method's metric beats the baseline's by more than the band
    (holds), loses by more than it (does not hold), or neither (inconclusive)."""

    def decide(df: pd.DataFrame) -> Verdict:
        m, sm, nm = seed_stats(df, method, metric)
        b, sb, nb = seed_stats(df, baseline, metric)
        if nm == 0 or nb == 0:
            return Verdict("inconclusive", f"missing {metric} for {method if nm == 0 else baseline}")
        delta = (m - b) if higher_is_better else (b - m)
        width = band(sm, sb, min_band)
        evidence = f"{metric}: {method} {m:.4g} vs {baseline} {b:.4g} (Δ {m - b:+.4g}, band ±{width:.3g}, seeds {nm}/{nb})"
        if delta > width:
            return Verdict("holds", evidence)
        if delta < -width:
            return Verdict("does not hold", evidence)
        return Verdict("inconclusive", evidence)

    return decide
