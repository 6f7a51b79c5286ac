"""`iclrbench compare` fails loudly: failed, non-finite and missing quality metrics are
regressions (exit 1); sides with nothing in common and unreadable CSVs are bad input
(exit 2); text columns stay text; the stored reference still names registered things."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.cli import main
from benchmarks.compare import compare, render
from benchmarks.registry import get_benchmark, list_benchmarks
from benchmarks.results import SCHEMA, BadResultsError, read_results, read_rows, write_csv
from tests.support import ROOT, rows

NAN = float("nan")


def failed(variant: str = "method", seed: int = 0, error: str = "RuntimeError: planted failure") -> pd.DataFrame:
    """The row the runner writes for a failed unit: no metric, no value, the error's tail."""
    return rows(variant=variant, seed=seed, metric="", value=NAN, higher_is_better=None, status="error", error=error)


REF = pd.concat([rows(seed=0, value=0.90), rows(seed=1, value=0.91),
                 rows(variant="baseline", seed=0, value=0.80), rows(variant="baseline", seed=1, value=0.81)])


def run_compare(tmp_path: Path, run: pd.DataFrame, ref: pd.DataFrame = REF) -> int:
    write_csv(tmp_path / "run.csv", run)
    write_csv(tmp_path / "ref.csv", ref)
    return main(["compare", str(tmp_path / "run.csv"), "--against", str(tmp_path / "ref.csv")])


def regressions(c) -> dict[tuple[str, str], str]:
    bad = c.table[c.table["verdict"] == "REGRESSED"]
    return {(r.variant, r.metric): r.reason for r in bad.itertuples()}


# --------------------------------------------------------------------------- exit 1
def test_a_failed_unit_is_a_regression_named_with_its_error(tmp_path, capsys):
    run = pd.concat([failed("method", 0), failed("method", 1), rows(variant="baseline", seed=0, value=0.80),
                     rows(variant="baseline", seed=1, value=0.81)])
    assert run_compare(tmp_path, run) == 1
    out = capsys.readouterr().out
    assert "toy/method score (synthetic, smoke): failed (seed 0, 1): RuntimeError: planted failure" in out
    assert "REGRESSED" in out and "only in the reference" not in out


def test_one_failed_seed_is_a_regression_even_when_another_seed_measured(tmp_path):
    run = pd.concat([rows(seed=0, value=0.90), failed("method", 1), REF[REF["variant"] == "baseline"]])
    c = compare(run, REF)
    assert regressions(c) == {("method", "score"): "failed (seed 1): RuntimeError: planted failure"}


@pytest.mark.parametrize("bad", [NAN, math.inf, -math.inf])
def test_a_non_finite_quality_value_is_a_regression_not_an_improvement(tmp_path, capsys, bad):
    run = pd.concat([rows(seed=0, value=bad), rows(seed=1, value=0.91), REF[REF["variant"] == "baseline"]])
    c = compare(run, REF)
    assert regressions(c) == {("method", "score"): f"non-finite value {bad} (seed 0)"}
    assert run_compare(tmp_path, run) == 1
    assert "non-finite value" in capsys.readouterr().out


def test_a_metric_missing_from_a_benchmark_the_run_ran_is_a_regression(tmp_path, capsys):
    run = pd.concat([rows(seed=0, metric="score_v2"), REF[REF["variant"] == "baseline"]])  # renamed metric
    c = compare(run, REF)
    assert regressions(c) == {("method", "score"): "missing in the run"}
    assert c.only_run["metric"].tolist() == ["score_v2"]
    assert run_compare(tmp_path, run) == 1
    assert "toy/method score (synthetic, smoke): missing in the run" in capsys.readouterr().out


def test_a_missing_variant_names_the_failed_units_of_its_benchmark():
    run = pd.concat([REF[REF["variant"] == "baseline"], failed("an_extra", 0, "ValueError: bad sweep")])
    assert regressions(compare(run, REF)) == {("method", "score"): "missing in the run (failed units of toy: an_extra)"}


def test_a_regression_beyond_the_band_says_by_how_much():
    run = REF.assign(value=[0.70, 0.71, 0.80, 0.81])
    assert regressions(compare(run, REF)) == {("method", "score"): "lower by 0.2, beyond the band ±0.0453"}


def test_a_lost_seed_is_missing_in_the_run(tmp_path, capsys):
    run = REF[~((REF["variant"] == "method") & (REF["seed"] == 0))]  # seed 0 of method's score dropped
    assert regressions(compare(run, REF)) == {("method", "score"): "missing in the run (seed 0)"}
    assert run_compare(tmp_path, run, REF) == 1
    assert "missing in the run (seed 0)" in capsys.readouterr().out


def test_fewer_seeds_on_purpose_says_both_counts_unless_accepted(tmp_path):
    ref = pd.concat([REF, rows(seed=2, value=0.92), rows(variant="baseline", seed=2, value=0.82)])
    run = ref[ref["seed"] == 0]  # --seeds 1 against a 3-seed reference
    reasons = regressions(compare(run, ref))
    assert reasons[("method", "score")] == ("missing in the run (seed 1, 2): the run has 1 seed(s) of toy, the "
                                            "reference 3 (--allow-fewer-seeds accepts fewer on purpose)")
    assert not compare(run, ref, allow_fewer_seeds=True).regressed
    write_csv(tmp_path / "run.csv", run)
    write_csv(tmp_path / "ref.csv", ref)
    args = ["compare", str(tmp_path / "run.csv"), "--against", str(tmp_path / "ref.csv")]
    assert main(args) == 1 and main([*args, "--allow-fewer-seeds"]) == 0
    # a lost seed is not excused by the flag: the run ran seed 1 of the baseline but not of the method
    lost = REF[~((REF["variant"] == "method") & (REF["seed"] == 1))]
    assert compare(lost, REF, allow_fewer_seeds=True).regressed


def three_seeds(values, variant="method") -> pd.DataFrame:
    return pd.concat([rows(variant=variant, seed=s, value=v) for s, v in enumerate(values)])


@pytest.mark.parametrize("shift, expected", [(0.5, "same"), (-0.5, "same"), (3.0, "improved"), (-3.0, "REGRESSED")])
def test_a_band_is_never_narrower_than_the_tolerance_and_several_tolerances_regress(shift, expected):
    # seeds agree closely on both sides (2 pooled std would be ±0.002), but machines move a metric by up to its
    # declared tolerance (5 % here): half a tolerance is the same, three tolerances is a change
    ref = three_seeds([0.800, 0.801, 0.799])
    run = three_seeds([x + shift * 0.05 * 0.8 for x in (0.800, 0.801, 0.799)])
    (row,) = compare(run, ref).table.itertuples()
    assert row.verdict == expected and row.band == pytest.approx(0.04) and row.basis == "±5%"


def test_few_noisy_seeds_widen_the_band_beyond_the_tolerance():
    ref, run = three_seeds([0.70, 0.90, 0.80])[:2], three_seeds([0.72, 0.88, 0.80])[:2]  # two seeds each, sd 0.14
    (row,) = compare(run, ref).table.itertuples()
    assert row.verdict == "same" and row.band > 0.3 and row.basis == "seeds 2/2 (95 %)"  # t(0.975, 2) = 4.3


def test_render_prints_what_needs_attention_unless_asked_for_everything(tmp_path, capsys):
    run = REF.assign(value=[0.70, 0.71, 0.80, 0.81])  # method regressed, baseline the same
    c = compare(run, REF)
    short, full = render(c), render(c, show_all=True)
    assert "REGRESSED" in short and "baseline" not in short.split("compared")[0]
    assert "baseline" in full and short.splitlines()[-1] == "compared 2 rows: REGRESSED 1, same 1"
    write_csv(tmp_path / "run.csv", run)
    write_csv(tmp_path / "ref.csv", REF)
    assert main(["compare", str(tmp_path / "run.csv"), "--against", str(tmp_path / "ref.csv"), "--csv",
                 str(tmp_path / "cmp.csv")]) == 1
    assert len(pd.read_csv(tmp_path / "cmp.csv")) == 2  # the whole table


# --------------------------------------------------------------------------- exit 0
def test_a_benchmark_the_run_did_not_run_is_listed_not_judged(tmp_path, capsys):
    ref = pd.concat([REF, rows(benchmark="other", variant="v", metric="acc")])
    assert run_compare(tmp_path, REF, ref) == 0
    out = capsys.readouterr().out
    assert "only in the reference (1)" in out and "other" in out


def test_efficiency_metrics_keep_the_hardware_rule_and_are_never_regressions():
    ref = pd.concat([REF, rows(metric="train_throughput", value=100.0, benchmark="vit", variant="vit")])
    for new in (rows(metric="train_throughput", value=NAN, benchmark="vit", variant="vit"),
                rows(metric="train_throughput", value=10.0, benchmark="vit", variant="vit")):
        c = compare(pd.concat([REF, new]), ref)
        assert not c.regressed
    c = compare(pd.concat([REF, rows(benchmark="vit", variant="vit", metric="top1", value=0.5)]), ref)
    assert not c.regressed and c.only_ref["metric"].tolist() == ["train_throughput"]  # missing: listed


def test_a_non_finite_reference_value_is_not_judged():
    ref = pd.concat([REF, rows(metric="other", value=NAN)])
    c = compare(pd.concat([REF, rows(metric="other", value=0.5)]), ref)
    assert not c.regressed and "other" not in set(c.table["metric"])


def test_render_lists_failed_units_of_the_run():
    c = compare(pd.concat([REF, failed("an_extra", 0, "ValueError: bad sweep")]), REF)
    assert not c.regressed
    assert "failed units in the run (1):\n  toy/an_extra seed 0: ValueError: bad sweep" in render(c)


# --------------------------------------------------------------------------- exit 2
def test_nothing_in_common_exits_two_saying_what_each_side_holds(tmp_path, capsys):
    assert run_compare(tmp_path, REF.assign(preset="smoke"), REF.assign(preset="quick")) == 2
    err = capsys.readouterr().err
    assert "reference is preset quick, run is preset smoke" in err and err.count("\n") == 1
    with pytest.raises(BadResultsError, match="reference is benchmark toy, run is benchmark vit"):
        compare(REF.assign(benchmark="vit"), REF)


def test_a_run_that_only_failed_is_a_regression_not_bad_input(tmp_path):
    assert run_compare(tmp_path, pd.concat([failed("method"), failed("baseline")])) == 1


def test_a_non_numeric_value_is_an_error_naming_its_line(tmp_path, capsys):
    path = tmp_path / "run.csv"
    write_csv(path, REF.assign(value=["0.9", "0.91", "oops", "0.81"]))
    with pytest.raises(BadResultsError, match=r"non-numeric value 'oops' on line 4"):
        read_results(path)
    write_csv(tmp_path / "ref.csv", REF)
    assert main(["compare", str(path), "--against", str(tmp_path / "ref.csv")]) == 2
    assert "oops" in capsys.readouterr().err
    write_csv(path, REF.assign(value=["nan", "inf", "-inf", ""]))  # words pandas and Python write for floats
    assert read_results(path)["value"].isna().sum() == 2


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\xff\xfe\x00\x01",  # a binary file
    ("run_id,benchmark\n" + 'r,"toy\n').encode(),  # an unclosed quote
    (",".join(SCHEMA) + "\n" + ",".join(["x"] * (len(SCHEMA) + 3)) + "\n").encode(),  # too many fields
])
def test_a_binary_or_malformed_csv_exits_two_with_one_line(tmp_path, capsys, content):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    write_csv(good, REF)
    bad.write_bytes(content)
    with pytest.raises(BadResultsError, match=str(bad)):
        read_results(bad)
    assert main(["compare", str(good), "--against", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and err.count("\n") == 1 and "Traceback" not in err


# --------------------------------------------------------------------------- text columns
def test_hashes_shas_and_versions_are_read_back_as_the_strings_written(tmp_path):
    ids = dict(config_hash=["92e25915", "1234e5", "00000001", "nan"], run_id=["1e3", "2", "3", "4"],
               git_sha=["0123456789", "1e10", "abc", "12"], torch=["2.10", "2.1", "2", "2.10.0"])
    path = tmp_path / "r.csv"
    write_csv(path, REF.assign(**ids))
    for reader in (read_rows, read_results):
        df = reader(path)
        for col, expected in ids.items():
            assert df[col].tolist() == expected, (reader.__name__, col)


# --------------------------------------------------------------------------- the stored reference
def test_the_stored_quick_reference_names_registered_benchmarks_variants_and_metrics(monkeypatch):
    monkeypatch.delenv("ICLRBENCH_PLUGINS", raising=False)
    ref = read_results(ROOT / "results" / "reference" / "cpu-quick.csv")
    assert set(ref["benchmark"]) <= set(list_benchmarks())
    unknown = []
    for (name, variant, role), part in ref.groupby(["benchmark", "variant", "role"]):
        bench = get_benchmark(name)
        roles = {v.name: v.role for v in bench.variants}
        # an extra's rows may label what they measured (an estimator, a library): role "extra"
        if roles.get(variant, "extra") != role:
            unknown.append(f"{name}: variant {variant} ({role})")
        unknown += [f"{name}: metric {m}" for m in sorted(set(part["metric"].dropna())) if bench.metric(m) is None]
    assert not unknown, unknown
    assert set(ref["preset"]) == {"quick"}
    ok = ref[ref["status"] == "ok"]
    for name in sorted(set(ref["benchmark"])):  # a benchmark added since is not in it until it is regenerated
        bench = get_benchmark(name)
        assert set(ok.loc[ok["benchmark"] == name, "variant"]) >= {v.name for v in bench.variants}, name
        primary = ok[(ok["benchmark"] == name) & ok["step"].isna() & (ok["metric"] == bench.primary_metric.name)]
        # a variant that runs fewer of the unit's tasks in quick (rims_k_all: copying only) may lack the primary metric
        full_tasks = bench.config("quick").get("tasks")
        judged = {v.name for v in bench.variants if bench.config("quick", v.name).get("tasks") == full_tasks}
        assert set(primary["variant"]) >= judged, f"{name}: primary metric missing"
