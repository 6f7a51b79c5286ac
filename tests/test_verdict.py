"""The statistics behind every verdict (benchmarks/verdict.py): intervals against known values,
the decision rules on each side of their thresholds, and the seeds estimate against a simulation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmarks.verdict import (
    Comparison, Estimate, combine, decide, floor_separation, gate, iqm, iqm_difference, judge,
    paired_t, primary_vs_baseline, seeds_to_decide, welch_t,
)


def rows(values: dict[str, list[float]], metric: str = "score") -> pd.DataFrame:
    """One row per (variant, seed) of a scalar metric."""
    return pd.DataFrame([(v, s, metric, x) for v, xs in values.items() for s, x in enumerate(xs)],
                        columns=["variant", "seed", "metric", "value"]).assign(step=float("nan"))


# ------------------------------------------------------------------------------ intervals
def test_paired_t_matches_the_textbook_interval():
    # d = 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.3027 -> 2 ± 4.3027 / sqrt(3) = 2 ± 2.4841
    e = paired_t([1.0, 2.0, 3.0])
    assert e.effect == pytest.approx(2.0)
    assert (e.low, e.high) == pytest.approx((2 - 2.48414, 2 + 2.48414), abs=1e-4)
    # and scipy's own paired test on random data
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 7), rng.normal(0.5, 1, 7)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (paired_t(a - b).low, paired_t(a - b).high) == pytest.approx((ci.low, ci.high))


def test_two_seeds_give_a_wide_interval_not_two_standard_deviations():
    # the old band was 2 sd; with one degree of freedom the 95 % interval is ±12.71 standard errors
    e = paired_t([1.0, 3.0])  # mean 2, sd sqrt(2), standard error 1
    assert e.high - e.effect == pytest.approx(12.7062, rel=1e-4)


def test_welch_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 5), rng.normal(0, 3, 9)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    e = welch_t(a, b)
    assert (e.low, e.high) == pytest.approx((ci.low, ci.high))
    assert e.effect == pytest.approx(a.mean() - b.mean())


def test_iqm_is_rliables_trimmed_mean():
    # rliable's aggregate_iqm = scipy.stats.trim_mean(x, 0.25): the middle half of 8 runs
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(np.mean([3, 4, 5, 6]))


def test_iqm_difference_bootstrap_covers_the_effect_and_is_paired():
    rng = np.random.default_rng(2)
    base = rng.normal(-30, 8, 10)  # runs differ a lot between seeds ...
    e = iqm_difference(base + 5 + rng.normal(0, 0.5, 10), base)  # ... the pairs do not
    assert e.low > 3 and e.high < 7 and e.method == "IQM stratified bootstrap"
    few = iqm_difference(base[:5] + 5, base[:5])  # below MIN_BOOTSTRAP_RUNS the percentile interval undercovers
    assert few.effect == pytest.approx(5) and not math.isfinite(few.low) and math.isfinite(few.sd)


# ------------------------------------------------------------------------------ decisions
@pytest.mark.parametrize("low, high, delta, expected", [
    (0.01, 0.05, 0.0, "holds"),
    (0.01, 0.05, 0.03, "holds"),  # interval reaches delta
    (0.001, 0.02, 0.03, "does not hold"),  # reliably smaller than the claim needs
    (-0.05, -0.01, 0.0, "does not hold"),  # reliably worse
    (-0.01, 0.05, 0.0, "inconclusive"),
])
def test_better_rule(low, high, delta, expected):
    assert decide("better", Estimate((low + high) / 2, low, high, 5, 0.95, "paired t"), delta=delta) == expected


@pytest.mark.parametrize("low, high, expected", [
    (-0.01, 0.02, "holds"), (-0.04, 0.01, "inconclusive"), (0.04, 0.08, "does not hold"), (-0.09, -0.04, "does not hold"),
])
def test_equivalence_on_each_side_of_the_margin(low, high, expected):
    assert decide("equivalent", Estimate((low + high) / 2, low, high, 5, 0.9, "paired t"), margin=0.03) == expected


@pytest.mark.parametrize("low, high, expected", [(-0.02, 0.05, "holds"), (-0.05, 0.01, "inconclusive"), (-0.09, -0.04, "does not hold")])
def test_noninferiority(low, high, expected):
    assert decide("noninferior", Estimate((low + high) / 2, low, high, 5, 0.9, "paired t"), margin=0.03) == expected


def test_two_noisy_seeds_stay_inconclusive_and_ten_clear_seeds_hold():
    c = Comparison("m", "b", "score", "better", delta=0.01)
    noisy = judge(rows({"m": [0.90, 0.80], "b": [0.82, 0.79]}), c)  # +0.08 and +0.01: the old 2-sd band said "holds"
    assert noisy.status == "inconclusive" and noisy.estimate.n == 2
    assert noisy.seeds_needed is not None and noisy.seeds_needed > 2 and "seeds would decide" in noisy.text()
    rng = np.random.default_rng(4)
    base = rng.normal(0.8, 0.05, 10)
    clear = judge(rows({"m": list(base + 0.03 + rng.normal(0, 0.01, 10)), "b": list(base)}), c)
    assert clear.status == "holds" and clear.estimate.n == 10 and clear.estimate.low > 0


def test_lower_is_better_and_relative_effects_are_oriented_towards_the_method():
    c = Comparison("m", "b", "fid", "better", delta=0.05, higher_is_better=False, relative=True)
    j = judge(rows({"m": [8.0, 9.0, 7.0, 8.5], "b": [10.0, 11.0, 9.0, 10.5]}, "fid"), c)
    assert j.estimate.effect == pytest.approx(np.mean([2 / 10, 2 / 11, 2 / 9, 2 / 10.5]))
    assert j.status == "holds"


def test_one_seed_has_no_interval_and_says_so():
    j = judge(rows({"m": [0.9], "b": [0.1]}), Comparison("m", "b", "score"))
    assert j.status == "inconclusive" and "no interval" in j.note


def test_seeds_to_decide_agrees_with_a_simulation():
    effect, sd = 0.02, 0.02
    n = seeds_to_decide("better", effect, sd, delta=0.0)
    assert 8 <= n <= 14  # (t.975 + t.80) * sd / sqrt(n) < effect: about 10
    rng = np.random.default_rng(5)
    decided = [decide("better", paired_t(rng.normal(effect, sd, n))) == "holds" for _ in range(2000)]
    assert np.mean(decided) >= 0.75  # the power it was sized for (0.8), up to the t approximation
    fewer = [decide("better", paired_t(rng.normal(effect, sd, max(2, n // 3)))) == "holds" for _ in range(2000)]
    assert np.mean(fewer) < 0.6


def test_declarations_refuse_missing_thresholds():
    with pytest.raises(ValueError, match="margin"):
        Comparison("m", "b", "x", "equivalent")
    with pytest.raises(ValueError, match="delta"):
        Comparison("m", "b", "x", "better", delta=-1)
    with pytest.raises(ValueError, match="kind"):
        Comparison("m", "b", "x", "similar")


def test_gates_combine_and_floor_separation():
    c = Comparison("m", "b", "score", "noninferior", margin=0.05)
    j = judge(rows({"m": [0.50, 0.51, 0.52], "b": [0.50, 0.51, 0.52]}), c)
    assert j.status == "holds"
    ok, why = floor_separation({0: 0.50, 1: 0.51, 2: 0.52}, {0: 0.49, 1: 0.50, 2: 0.50}, 0.05)
    assert not ok and "does not separate" in why
    gated = gate(j, ok, why)
    assert gated.status == "inconclusive" and "does not separate" in gated.note and gated.estimate == j.estimate
    assert floor_separation({0: 0.9, 1: 0.91, 2: 0.92}, {0: 0.1, 1: 0.1, 2: 0.1}, 0.05)[0]
    assert combine([j, gated]) == "inconclusive" and combine([j, j]) == "holds"
    no = judge(rows({"m": [0.1, 0.11, 0.12], "b": [0.5, 0.51, 0.52]}), c)
    assert combine([j, no]) == "does not hold" and combine([j, no], "any") == "holds"


def test_primary_vs_baseline_is_a_paired_interval():
    decide_ = primary_vs_baseline("m", "b", "score")
    assert decide_(rows({"m": [0.90, 0.91, 0.92], "b": [0.80, 0.81, 0.82]})).status == "holds"
    assert decide_(rows({"m": [0.95, 0.75, 0.85], "b": [0.80, 0.81, 0.82]})).status == "inconclusive"
    assert decide_(rows({"m": [0.50, 0.51, 0.52], "b": [0.80, 0.81, 0.82]})).status == "does not hold"
    v = decide_(rows({"m": [0.90, 0.91, 0.92], "b": [0.80, 0.81, 0.82]}))
    assert len(v.judgements) == 1 and "95% paired t, n = 3" in v.evidence
