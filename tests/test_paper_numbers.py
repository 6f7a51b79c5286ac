"""Paper numbers say what they are (issue 18): every one is a target or context, with its table and
row; a number on a dataset the benchmark does not have is context; the report and compare keep the
two apart."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmarks.compare import compare, render
from benchmarks.registry import Benchmark, Metric, PaperNumber, PaperRef, Variant, get_benchmark, list_benchmarks
from benchmarks.results import SCHEMA


def _bench(paper_numbers):
    return Benchmark(name="x", paper=PaperRef("t", "a", "c"), claim="c", variants=[Variant("m", "method"), Variant("b", "baseline")],
                     datasets={"real": lambda *a: None}, defaults={}, presets={}, metrics=[Metric("acc", True)],
                     run=lambda ctx: [], verdict=lambda df: None, paper_numbers=paper_numbers)


def test_a_paper_number_must_say_target_or_context():
    with pytest.raises(TypeError):
        PaperNumber("m", "real", "acc", 0.9, "Table 1, row m")  # no default scope to rely on
    with pytest.raises(ValueError, match="scope must be 'target' or 'context'"):
        PaperNumber("m", "real", "acc", 0.9, "Table 1, row m", scope="goal")


def test_a_context_number_says_why():
    with pytest.raises(ValueError, match="says why after 'context:'"):
        PaperNumber("m", "real", "acc", 0.9, "Table 1, row m", scope="context")
    assert PaperNumber("m", "real", "acc", 0.9, "Table 1, row m; context: larger model", scope="context").scope == "context"


def test_a_target_on_a_dataset_the_benchmark_lacks_is_refused():
    with pytest.raises(ValueError, match="'imagenet' is not one of its datasets") as err:
        _bench([PaperNumber("m", "imagenet", "acc", 0.9, "Table 2, row m", scope="target")])
    assert "\n" not in str(err.value)
    _bench([PaperNumber("m", "imagenet", "acc", 0.9, "Table 2, row m; context: not our data", scope="context")])


@pytest.mark.parametrize("name", list_benchmarks())
def test_every_registered_paper_number_names_its_table_and_scope(name):
    for p in get_benchmark(name).paper_numbers:
        assert p.scope in ("target", "context"), p
        assert "Table" in p.source or "README" in p.source or "abstract" in p.source, p.source
        assert "verify)" not in p.source, p.source  # no "(offline transcription: verify)" left


def test_known_context_rows_are_context():
    vit = get_benchmark("vit")
    assert all(p.scope == "context" for p in vit.paper_numbers)  # pre-trained ViT-L/16 and BiT-L
    perf = get_benchmark("performer")
    assert {p.scope for p in perf.paper_numbers} == {"context"}
    sde = {(p.variant, p.metric, p.value): p.scope for p in get_benchmark("score_sde").paper_numbers}
    assert sde[("vp_ode", "bpd", 3.21)] == "target" and sde[("subvp_ode", "bpd", 2.99)] == "context"
    assert sde[("ve_pc", "fid_inception", 2.20)] == "context"


def _rows(values, **common):
    base = {c: "" for c in SCHEMA}
    base.update(run_id="r", role="method", preset="full", seed=0, step=math.nan, status="ok", higher_is_better=True,
                accelerator="cpu", devices=1, device_name="cpu")
    base.update(common)
    return pd.DataFrame([{**base, **v} for v in values])


def test_compare_against_paper_csv_judges_targets_only_and_lists_context():
    ref = _rows([dict(benchmark="score_sde", variant="vp_ode", dataset="cifar10", metric="bpd", value=3.21,
                      higher_is_better=False, scope="target", source="Table 2, row DDPM cont. (VP)"),
                 dict(benchmark="score_sde", variant="vp_ode", dataset="cifar10", metric="fid_inception", value=3.08,
                      higher_is_better=False, scope="context", source="Table 2, deep; context: deep DDPM++")],
                run_id="paper", seed=math.nan)
    run = _rows([dict(benchmark="score_sde", variant="vp_ode", dataset="cifar10", metric="bpd", value=3.22,
                      higher_is_better=False),
                 dict(benchmark="score_sde", variant="vp_ode", dataset="cifar10", metric="fid_inception", value=9.0,
                      higher_is_better=False)])
    c = compare(run, ref)
    assert list(c.table["metric"]) == ["bpd"]  # the context FID (9.0 vs 3.08) is not judged
    assert not c.regressed
    assert list(c.context["metric"]) == ["fid_inception"] and c.context["new"].iloc[0] == 9.0
    text = render(c)
    assert "context in the reference, not judged (1)" in text and "paper 3.08, run 9" in text


@pytest.mark.parametrize("name", list_benchmarks())
def test_a_benchmark_without_paper_numbers_says_why_in_its_report(name):
    from benchmarks.report import paper_context_note

    bench = get_benchmark(name)
    if bench.paper_numbers:
        return
    assert len(bench.paper_numbers_note) > 40, f"{name} has no paper numbers and no paper_numbers_note"
    assert paper_context_note(bench) == [f"_No paper numbers: {bench.paper_numbers_note}_", ""]


def test_report_puts_targets_in_the_paper_column_and_context_under_the_table():
    from benchmarks.report import paper_context_note, variant_table

    bench = get_benchmark("score_sde")
    df = _rows([dict(benchmark="score_sde", variant=v, role="method" if v != "ddpm_ancestral" else "baseline",
                     dataset="cifar10", metric=m, value=1.0) for v in ("vp_ode", "ddpm_ancestral") for m in ("bpd", "fid_inception")])
    table = variant_table(bench, df)
    assert "3.21 (cifar10; arXiv 2011.13456 Table 2, row DDPM cont. (VP)" in table
    assert "3.13" not in table and "deep" not in table
    note = "\n".join(paper_context_note(bench, df))
    assert "vp_ode bpd = 3.13" in note and "context: the deep DDPM++ architecture" in note
    assert "not beside ours" not in note  # every target is in the table


@pytest.mark.parametrize("change", [dict(preset="quick"), dict(dataset="digits")])
def test_a_target_goes_beside_ours_only_for_a_full_run_on_its_dataset(change):
    """A quick run, or a run on other data, measures another model or data than the paper's: its
    targets are listed under the table, not in the paper column."""
    from benchmarks.report import paper_context_note, variant_table

    bench = get_benchmark("score_sde")
    df = _rows([{**dict(benchmark="score_sde", variant=v, role="method" if v != "ddpm_ancestral" else "baseline",
                        dataset="cifar10", metric="bpd", value=1.0), **change} for v in ("vp_ode", "ddpm_ancestral")])
    table = variant_table(bench, df)
    assert "3.21" not in table and "| paper |" not in table.splitlines()[0]
    note = "\n".join(paper_context_note(bench, df))
    assert "not beside ours" in note and "vp_ode bpd = 3.21 (cifar10; arXiv 2011.13456 Table 2" in note
    assert f"(this run: {df['preset'][0]} on {df['dataset'][0]})" in note


def test_committed_paper_csv_has_scope_and_source():
    from pathlib import Path

    from benchmarks.results import read_results

    from benchmarks.paper import paper_rows

    stored = read_results(Path(__file__).resolve().parents[1] / "results" / "reference" / "paper.csv")
    assert set(stored["scope"]) <= {"target", "context"} and stored["source"].str.len().gt(0).all()
    spec = paper_rows()
    key = ["benchmark", "variant", "dataset", "metric", "value"]
    merged = stored.merge(spec[spec["benchmark"] != "toy"], on=key, suffixes=("_stored", "_spec"), how="outer", indicator=True)
    assert (merged["_merge"] == "both").all(), merged.loc[merged["_merge"] != "both", key]
    assert (merged["scope_stored"] == merged["scope_spec"]).all() and (merged["source_stored"] == merged["source_spec"]).all()
