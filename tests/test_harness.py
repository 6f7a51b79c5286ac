"""The harness: registry, runner (errors, timeouts, resume, interruption), results, compare, CLI."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from benchmarks import registry
from benchmarks.cli import main
from benchmarks.compare import compare
from benchmarks.registry import Benchmark, Metric, PaperRef, Task, UnknownNameError, Variant, get_benchmark, list_benchmarks
from benchmarks.results import SCHEMA, BadResultsError, read_results, read_rows, write_csv
from benchmarks.verdict import primary_vs_baseline
from tests.support import ROOT, cli, rows


# ------------------------------------------------------------------------------ registry
def test_registry_lists_the_vit_benchmark_with_a_method_and_a_baseline():
    assert "vit" in list_benchmarks()
    roles = {v.role for v in get_benchmark("vit").variants}
    assert roles == {"method", "baseline"}


def test_registering_a_name_twice_is_refused():
    def vit():  # same name as the registered spec
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="registered twice"):
        registry.register_benchmark(vit)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownNameError, match=r"unknown benchmark 'vti'; known: .*vit"):
        get_benchmark("vti")
    bench = get_benchmark("vit")
    with pytest.raises(UnknownNameError, match="known: vit, resnet"):
        bench.variant("cnn")
    with pytest.raises(UnknownNameError, match="known: smoke, quick, full"):
        bench.config("tiny")
    with pytest.raises(UnknownNameError, match="config key"):
        bench.config("smoke", overrides={"max_stepz": 3})


def test_config_layers_defaults_preset_variant_and_overrides():
    bench = get_benchmark("vit")
    cfg = bench.config("smoke", "resnet", {"lr": 0.5})
    assert cfg["arch"] == "resnet" and cfg["lr"] == 0.5
    assert cfg["max_steps"] == bench.presets["smoke"]["max_steps"]
    assert cfg["batch_size"] == bench.defaults["batch_size"]


def test_a_variants_preset_config_applies_at_that_preset_only_and_overrides_still_win():
    """ance's learning rates were tuned at quick: they must not reach the full preset's pre-trained BERT-base."""
    bench = get_benchmark("ance")
    assert bench.config("quick", "ance")["lr"] == 3e-4 and bench.config("quick", "inbatch_neg")["lr"] == 1e-3
    assert bench.config("full", "ance")["lr"] == bench.config("full", "inbatch_neg")["lr"] == bench.presets["full"]["lr"]
    assert bench.config("quick", "ance", {"lr": 5e-4})["lr"] == 5e-4  # --set (and a tuning try) wins
    common = dict(name="x", paper=PaperRef("t", "a", "c"), claim="c", datasets={"d": lambda *a: None},
                  defaults={"a": 1}, metrics=[Metric("m", True)], run=lambda ctx: [], verdict=lambda df: None)
    with pytest.raises(ValueError, match="unknown keys"):
        Benchmark(variants=[Variant("v", "baseline", presets={"quick": {"b": 2}})], presets={}, **common)
    with pytest.raises(ValueError, match="unknown presets"):
        Benchmark(variants=[Variant("v", "baseline", presets={"huge": {"a": 2}})], presets={}, **common)


def test_a_spec_without_baseline_or_with_unknown_preset_keys_is_refused():
    common = dict(name="x", paper=PaperRef("t", "a", "c"), claim="c", datasets={"d": lambda *a: None},
                  defaults={"a": 1}, metrics=[Metric("m", True)], run=lambda ctx: [], verdict=lambda df: None)
    with pytest.raises(ValueError, match="baseline"):
        Benchmark(variants=[Variant("v", "method")], presets={}, **common)
    with pytest.raises(ValueError, match="unknown keys"):
        Benchmark(variants=[Variant("v", "baseline")], presets={"smoke": {"b": 2}}, **common)


# ------------------------------------------------------------------------------ results
def test_read_results_names_the_missing_columns(tmp_path):
    path = tmp_path / "ref.csv"
    rows().drop(columns=["metric", "seed"]).to_csv(path, index=False)
    with pytest.raises(BadResultsError, match="lacks schema columns: seed, metric"):
        read_results(path)


@pytest.mark.parametrize("content, message", [(None, "not found"), ("", "empty"), (",".join(SCHEMA) + "\n", "no rows")])
def test_read_results_refuses_missing_or_empty_files(tmp_path, content, message):
    path = tmp_path / "ref.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BadResultsError, match=message):
        read_results(path)


# ------------------------------------------------------------------------------ compare
def test_compare_identical_results_is_clean_and_exits_zero(tmp_path, capsys):
    df = pd.concat([rows(seed=0, value=0.90), rows(seed=1, value=0.92)])
    write_csv(tmp_path / "a.csv", df)
    assert main(["compare", str(tmp_path / "a.csv"), "--against", str(tmp_path / "a.csv")]) == 0
    assert "same" in capsys.readouterr().out


def test_compare_flags_a_planted_regression_with_exit_one(tmp_path, capsys):
    write_csv(tmp_path / "ref.csv", pd.concat([rows(seed=0, value=0.90), rows(seed=1, value=0.92)]))
    write_csv(tmp_path / "new.csv", pd.concat([rows(seed=0, value=0.70), rows(seed=1, value=0.71)]))
    assert main(["compare", str(tmp_path / "new.csv"), "--against", str(tmp_path / "ref.csv")]) == 1
    assert "REGRESSED" in capsys.readouterr().out


def test_compare_band_is_a_welch_interval_over_the_seeds_when_wider_than_the_tolerance():
    ref = pd.concat([rows(seed=s, value=v) for s, v in enumerate([0.80, 0.90, 0.85, 0.75])])  # sd 0.065
    inside = compare(pd.concat([rows(seed=s, value=v) for s, v in enumerate([0.76, 0.80, 0.84, 0.72])]), ref)
    outside = compare(pd.concat([rows(seed=s, value=v) for s, v in enumerate([0.60, 0.62, 0.58, 0.61])]), ref)
    assert inside.table["verdict"].tolist() == ["same"] and inside.table["basis"].tolist() == ["seeds 4/4 (95 %)"]
    assert outside.table["verdict"].tolist() == ["REGRESSED"]
    two = compare(pd.concat([rows(seed=0, value=0.60), rows(seed=1, value=0.62)]), ref.iloc[:2])
    assert two.table["verdict"].tolist() == ["same"]  # two seeds a side: t(0.975, ~1) makes the band wide


def test_compare_lower_is_better_and_efficiency_only_on_matching_hardware():
    ref = rows(metric="loss", value=1.0, higher_is_better=False)
    assert compare(rows(metric="loss", value=2.0, higher_is_better=False), ref).regressed
    assert compare(rows(metric="loss", value=0.5, higher_is_better=False), ref).table["verdict"].tolist() == ["improved"]
    from benchmarks.compare import _metric_info

    assert _metric_info("vit", "train_throughput")[0] == "efficiency"
    ref = rows(benchmark="vit", variant="vit", metric="train_throughput", value=100.0)
    new = rows(benchmark="vit", variant="vit", metric="train_throughput", value=10.0, device_name="H100")
    c = compare(new, ref)
    assert c.table["verdict"].tolist() == ["not compared (hardware differs)"] and not c.regressed


def test_compare_lists_rows_present_on_one_side_only():
    # a benchmark the run did not run at all is listed, not judged (a missing metric of a
    # benchmark it did run is a regression: tests/test_compare.py)
    c = compare(pd.concat([rows(), rows(variant="extra_one")]), pd.concat([rows(), rows(benchmark="other")]))
    assert c.only_run["variant"].tolist() == ["extra_one"]
    assert c.only_ref["benchmark"].tolist() == ["other"]
    assert not c.regressed


def test_compare_bad_reference_exits_two_naming_file_and_columns(tmp_path, capsys):
    good = tmp_path / "good.csv"
    write_csv(good, rows())
    bad = tmp_path / "bad.csv"
    rows().drop(columns=["value"]).to_csv(bad, index=False)
    assert main(["compare", str(good), "--against", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "value" in err and err.count("\n") == 1
    assert main(["compare", str(good), "--against", str(tmp_path / "nope.csv")]) == 2


# ------------------------------------------------------------------------------ verdicts
def test_primary_vs_baseline_decides_on_a_paired_interval():
    decide = primary_vs_baseline("method", "baseline", "score")
    df = pd.concat([rows(variant=v, seed=s, value=x) for v, s, x in
                    [("method", 0, 0.9), ("method", 1, 0.91), ("method", 2, 0.92),
                     ("baseline", 0, 0.8), ("baseline", 1, 0.81), ("baseline", 2, 0.815)]])
    assert decide(df).status == "holds"  # +0.1 in every pair
    assert decide(df.assign(value=[0.95, 0.75, 0.85, 0.80, 0.81, 0.815])).status == "inconclusive"  # pairs disagree
    df3 = df.assign(value=[0.5, 0.51, 0.52, 0.8, 0.81, 0.815])
    assert decide(df3).status == "does not hold"
    lower = primary_vs_baseline("method", "baseline", "score", higher_is_better=False)
    assert lower(df3).status == "holds" and lower(df).status == "does not hold"


# ------------------------------------------------------------------------------ CLI input
@pytest.mark.parametrize("args, needle", [
    (["run", "prformer"], "unknown benchmark 'prformer'"),
    (["run", "vit", "--preset", "huge"], "unknown preset 'huge'"),
    (["run", "vit", "--variant", "cnn"], "unknown variant of vit 'cnn'"),
    (["run", "vit", "--dataset", "imagenet"], "unknown dataset of vit 'imagenet'"),
    (["run", "vit", "--set", "nope=1"], "unknown config key"),
    (["run", "vit", "--set", "justakey"], "KEY=VALUE"),
    (["run", "vit", "--set", "lr=fast"], "expected a number"),
])
def test_bad_names_exit_two_with_one_line(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_set_reads_exponent_numbers_as_numbers():
    from benchmarks.cli import _parse_set

    assert _parse_set(["lr=1e-3", "a.b=2", "x=null", "name=ddpm", "f=3.5E+2"]) == {"lr": 1e-3, "a.b": 2, "x": None,
                                                                                   "name": "ddpm", "f": 350.0}


def test_cifar10_without_files_or_network_fails_fast_saying_where(tmp_path, monkeypatch, capsys):
    import datamodules.images as images

    monkeypatch.setattr(images, "_online", lambda *a, **k: False)
    start = time.perf_counter()
    code = main(["run", "vit", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--preset", "smoke", "--out", str(tmp_path)])
    assert code == 3 and time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert "cifar-10-batches-py" in err and str(tmp_path) in err


@pytest.mark.parametrize("bench,dataset,needle", [
    ("genre", "aida", "aidayago2-train-kilt.jsonl"),
    ("genre", "wned", "wned-dev-kilt.jsonl"),
    ("ance", "msmarco", "collection.tsv"),
    ("ance", "beir", "corpus.jsonl"),
])
def test_missing_text_datasets_fail_before_any_unit(bench, dataset, needle, tmp_path, capsys):
    """KILT / MS MARCO / BEIR files missing: exit 3 with one line naming the file, no unit run."""
    start = time.perf_counter()
    out = tmp_path / "out"
    code = main(["run", bench, "--dataset", dataset, "--data-dir", str(tmp_path), "--preset", "smoke", "--out", str(out)])
    assert code == 3 and time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert needle in err and str(tmp_path) in err and err.count("\n") == 1
    assert not any(out.rglob("summary.csv"))


# ------------------------------------------------------------------------------ runner
@pytest.mark.slow
def test_failures_become_error_rows_and_the_suite_goes_on(tmp_path, toy_env):
    out = cli(["run", "toy", "--preset", "smoke", "--out", str(tmp_path), "--quiet", "--variant", "method",
               "--variant", "nan", "--variant", "crash", "--variant", "baseline"], toy_env)
    assert out.returncode == 4, out.stderr
    (run_dir,) = tmp_path.iterdir()
    df = read_rows(run_dir / "summary.csv")
    errors = df[df["status"] == "error"].set_index("variant")["error"]
    assert "NonFiniteLossError" in errors["nan"] and "loss is nan" in errors["nan"]
    assert "planted failure" in errors["crash"]
    assert set(df.loc[df["status"] == "ok", "variant"]) == {"method", "baseline"}  # ran after the failures
    report = (run_dir / "report.md").read_text()
    assert "## Failed units" in report and "planted failure" in report


@pytest.mark.slow
def test_same_seed_gives_identical_values_and_rerun_resumes(tmp_path, toy_env):
    args = ["run", "toy", "--preset", "smoke", "--out", str(tmp_path), "--quiet", "--variant", "method", "--variant", "baseline",
            "--seeds", "3"]
    first = cli(args, toy_env)
    assert first.returncode == 0, first.stderr
    again = cli(args, toy_env)
    assert again.stdout.count("complete, skipped") == 6
    fresh = cli([*args, "--fresh"], toy_env)
    assert fresh.returncode == 0
    a, b = sorted(tmp_path.iterdir())
    va = read_rows(a / "summary.csv").sort_values(["variant", "metric"])["value"].to_numpy()
    vb = read_rows(b / "summary.csv").sort_values(["variant", "metric"])["value"].to_numpy()
    assert (va == vb).all()
    report = (a / "report.md").read_text()
    # lr 0.1 fits better than lr 0.01 in every seed: the claims table gives the pair, n and the interval
    row = next(line for line in report.splitlines() if line.startswith("| toy |"))
    assert "method vs baseline (better, smallest effect 0): holds | 3 |" in row and "(95%)" in row and "**holds**" in row
    assert "0 (synthetic; nowhere)" in report  # the paper's number beside ours, with its source
    assert (a / "plots" / "toy_curve.png").stat().st_size > 0
    (a / "report.md").unlink()
    assert main(["report", str(a)]) == 0 and (a / "report.md").read_text() == report


def test_a_preset_with_several_tasks_plans_every_variant_and_seed_on_each():
    from benchmarks.plan import RunOptions, plan

    registry._load_specs()
    import tests.toy_spec  # noqa: F401  (registers toy)

    units = plan(RunOptions(names=["toy"], preset="full", seeds=2, variants=["method", "baseline"]))
    assert sorted({(u.dataset, u.name, u.seed) for u in units}) == sorted(
        (d, v, s) for d in ("synthetic", "shifted") for v in ("method", "baseline") for s in (0, 1))
    assert len({u.stem for u in units}) == len(units) == 8 and "toy__method__shifted__s1" in {u.stem for u in units}
    assert {(u.dataset, u.config["steps"]) for u in units} == {("synthetic", 8), ("shifted", 6)}  # the task's own keys
    # --dataset picks one task; a preset without tasks runs the default dataset, with the old stems
    one = plan(RunOptions(names=["toy"], preset="full", seeds=1, variants=["method"], dataset="shifted"))
    assert [(u.dataset, u.stem, u.config["steps"]) for u in one] == [("shifted", "toy__method__s0", 6)]
    assert {u.dataset for u in plan(RunOptions(names=["toy"], preset="smoke", variants=["method"]))} == {"synthetic"}
    # without --seeds / --variant, a task's own seeds and variants apply
    default = plan(RunOptions(names=["toy"], preset="full"))
    assert sorted({(u.name, u.seed) for u in default if u.dataset == "shifted"}) == [("baseline", 0), ("method", 0)]
    assert len([u for u in default if u.dataset == "synthetic"]) == 6 * 3
    with pytest.raises(ValueError, match="tasks must map a preset"):
        Benchmark(**{**vars(get_benchmark("toy")), "tasks": {"quick": {"synthetic": Task(), "nowhere": Task()}}})
    with pytest.raises(ValueError, match="sets unknown keys"):
        Benchmark(**{**vars(get_benchmark("toy")), "tasks": {"quick": {"synthetic": Task({"stepz": 1})}}})
    with pytest.raises(ValueError, match="needs variants among"):
        Benchmark(**{**vars(get_benchmark("toy")), "tasks": {"quick": {"synthetic": Task(variants=("nobody",))}}})


def test_tuning_grids_must_give_every_variant_the_same_number_of_tries():
    from benchmarks.registry import Tuning

    registry._load_specs()
    import tests.toy_spec  # noqa: F401  (registers toy)

    toy = vars(get_benchmark("toy"))
    assert [len(toy["tuning"].points(v)) for v in ("method", "baseline")] == [2, 2]
    for bad in ({"method": {"lr": (0.1, 0.2, 0.3)}, "baseline": {"lr": (0.1,)}},  # unequal effort
                {"method": {"lrr": (0.1,)}}, {"nobody": {"lr": (0.1,)}}):
        with pytest.raises(ValueError, match="same number of tries"):
            Benchmark(**{**toy, "tuning": Tuning(score="score", grids=bad)})
    with pytest.raises(ValueError, match="declared score metric"):
        Benchmark(**{**toy, "tuning": Tuning(score="nothing", grids={"method": {"lr": (0.1,)}})})


@pytest.mark.slow
def test_tune_runs_every_try_and_names_the_best_by_the_declared_score(tmp_path, toy_env):
    out = cli(["tune", "toy", "--preset", "smoke", "--out", str(tmp_path)], toy_env)
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(tmp_path / "toy-smoke-tuning.csv")
    assert sorted(zip(table["variant"], table["point"])) == [
        ("baseline", '{"lr": 0.0001}'), ("baseline", '{"lr": 0.05}'), ("method", '{"lr": 0.001}'), ("method", '{"lr": 0.1}')]
    assert table["score"].notna().all() and set(table["seed"]) == {0}
    best = {v: part.sort_values("score").iloc[-1]["point"] for v, part in table.groupby("variant")}
    assert f'toy/method: best of 2 tries by score (mean over 1 seeds): {best["method"]}' in out.stdout
    assert cli(["tune", "vit", "--out", str(tmp_path)], toy_env).returncode == 2  # no grid declared


@pytest.mark.slow
def test_each_task_gets_its_rows_its_table_and_its_plots(tmp_path, toy_env):
    out = cli(["run", "toy", "--preset", "full", "--seeds", "1", "--out", str(tmp_path), "--quiet", "--variant", "method",
               "--variant", "baseline"], toy_env)
    assert out.returncode == 0, out.stderr
    (run_dir,) = tmp_path.iterdir()
    df = read_rows(run_dir / "summary.csv")
    assert set(map(tuple, df[["dataset", "variant"]].drop_duplicates().to_numpy())) == {
        (d, v) for d in ("synthetic", "shifted") for v in ("method", "baseline")}
    score = df[df["metric"] == "score"].set_index(["dataset", "variant"])["value"]
    assert score["shifted", "method"] != score["synthetic", "method"]  # each unit trained on its own task
    report = (run_dir / "report.md").read_text()
    assert "### toy on synthetic" in report and "### toy on shifted" in report
    assert (run_dir / "plots" / "toy_shifted_curve.png").stat().st_size > 0


@pytest.mark.slow
def test_interrupting_a_run_keeps_completed_rows_and_rerun_finishes(tmp_path, toy_env):
    args = [sys.executable, "-m", "benchmarks.cli", "run", "toy", "--preset", "smoke", "--out", str(tmp_path), "--quiet",
            "--variant", "method", "--variant", "slow"]
    proc = subprocess.Popen(args, cwd=ROOT, env={**toy_env, "TOY_SLEEP": "120"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("*/units/toy__method__s0.csv")):
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    (run_dir,) = tmp_path.iterdir()
    df = read_rows(run_dir / "summary.csv")
    assert set(df["variant"]) == {"method"}
    done = subprocess.run(args, cwd=ROOT, env={**toy_env, "TOY_SLEEP": "0"}, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "toy/method seed 0: complete, skipped" in done.stdout
    assert set(read_rows(run_dir / "summary.csv")["variant"]) == {"method", "slow"}


@pytest.mark.slow
def test_a_unit_past_its_timeout_is_an_error_row(tmp_path, toy_env):
    out = cli(["run", "toy", "--preset", "smoke", "--out", str(tmp_path), "--quiet", "--variant", "slow", "--timeout", "3"],
              {**toy_env, "TOY_SLEEP": "60"})
    assert out.returncode == 4
    df = read_rows(next(tmp_path.iterdir()) / "summary.csv")
    assert df["error"].str.contains("timed out after 3 s").all()


def test_the_run_id_changes_with_the_code_and_the_options_but_not_other_files(tmp_path, monkeypatch):
    from benchmarks import runner

    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    (repo / "benchmarks" / "spec.py").write_text("lr = 0.1\n")
    (repo / "README.md").write_text("a\n")
    git("add", ".")
    git("commit", "-qm", "one")
    monkeypatch.setattr(runner, "REPO_ROOT", repo)
    opts = runner.RunOptions(["vit"], preset="smoke")

    def run_id(o: runner.RunOptions = opts) -> tuple[str, bool]:
        _, dirty, fingerprint = runner.code_version()
        return runner.run_id_for(o, fingerprint), dirty

    clean, dirty = run_id()
    first_sha = git("rev-parse", "HEAD").strip()
    assert not dirty and clean.startswith(f"smoke-{first_sha[:7]}-") and run_id() == (clean, False)
    (repo / "README.md").write_text("b\n")  # not code: the same run, resumed
    assert run_id() == (clean, False)
    (repo / "benchmarks" / "spec.py").write_text("lr = 0.2\n")  # uncommitted code: another run
    edited, dirty = run_id()
    assert dirty and edited != clean
    (repo / "benchmarks" / "spec.py").write_text("lr = 0.3\n")
    assert run_id()[0] not in (clean, edited)
    git("commit", "-qam", "two")
    committed, dirty = run_id()
    assert not dirty and committed not in (clean, edited) and committed.split("-")[1] != clean.split("-")[1]
    assert run_id(runner.RunOptions(["vit"], preset="smoke", seeds=2))[0] != committed
    assert run_id(runner.RunOptions(["vit"], preset="smoke", out="elsewhere", quiet=True))[0] == committed


def test_paper_csv_in_the_repository_matches_the_specs(monkeypatch):
    monkeypatch.delenv("ICLRBENCH_PLUGINS", raising=False)
    from benchmarks.paper import paper_rows

    stored = read_results(ROOT / "results" / "reference" / "paper.csv")
    expected = paper_rows()
    expected = expected[expected["benchmark"] != "toy"]
    # a target and a context number may share the rest, and two context numbers differ in their source
    key = ["benchmark", "variant", "dataset", "metric", "scope", "source"]
    merged = stored.merge(expected, on=key, suffixes=("_stored", "_spec"), how="outer", indicator=True)
    assert (merged["_merge"] == "both").all(), merged.loc[merged["_merge"] != "both", key]
    assert (merged["value_stored"] == merged["value_spec"]).all()
    assert merged["source"].str.len().gt(0).all()


def test_fid_weights_flag_is_a_scoped_override_of_score_sde():
    from benchmarks.cli import build_parser, run_overrides

    args = build_parser().parse_args(["run", "score_sde", "--fid-weights", "/w/inception.pth", "--set", "vit.lr=0.1"])
    assert run_overrides(args, ["score_sde"]) == {"vit.lr": 0.1, "score_sde.fid_weights": "/w/inception.pth"}
    from benchmarks.runner import overrides_for

    assert overrides_for(get_benchmark("score_sde"), {"score_sde.fid_weights": "/w/i.pth"}, ["score_sde"]) == {"fid_weights": "/w/i.pth"}
    assert main(["run", "vit", "--fid-weights", "/w/inception.pth"]) == 2


def test_qualified_curves_of_one_metric_share_one_figure(tmp_path):
    from benchmarks.report import plot_curves

    family = pd.concat([rows(metric=f"curve@unit={u}", step=float(s), value=float(u + s), seed=seed)
                        for u in range(4) for s in range(3) for seed in (0, 1)])
    assert [p.name for p in plot_curves(None, family, tmp_path / "a")] == ["toy_curve.png"]
    with_plain = pd.concat([family, *(rows(metric="curve", step=float(s), value=float(s)) for s in range(3))])
    assert [p.name for p in plot_curves(None, with_plain, tmp_path / "b")] == ["toy_curve.png"]
    single = pd.concat([rows(metric="curve@unit=0", step=float(s), value=float(s)) for s in range(3)])
    assert [p.name for p in plot_curves(None, single, tmp_path / "c")] == ["toy_curve_at_unit=0.png"]


# ------------------------------------------------------------------------------ pinned tokenizers
@pytest.mark.parametrize("bench", ["ance", "pmi_masking", "flyvec"])
def test_quick_presets_load_a_committed_tokenizer_instead_of_training_one(bench, tmp_path, monkeypatch):
    """WordPiece training is not reproducible across processes, so the embedded corpora's quick
    tokenizers ship with the code: with an empty cache nothing is trained or written."""
    import datamodules.text as text
    from benchmarks.registry import get_benchmark

    monkeypatch.setenv("ICLRBENCH_CACHE", str(tmp_path))
    loaded = []
    real = text.cached_tokenizer

    def spy(kind, settings, texts, build, cache=True):
        def fail():
            raise AssertionError(f"{bench} quick trained a {kind} tokenizer instead of loading a pinned one")
        tok = real(kind, settings, texts, fail, cache)
        loaded.append(tok.get_vocab_size())
        return tok

    monkeypatch.setattr(text, "cached_tokenizer", spy)
    b = get_benchmark(bench)
    dm = b.dataset(b.default_dataset)(b.config("quick"), None, 0)
    (getattr(dm, "prepare", None) or getattr(dm, "load", None) or dm.setup)()
    assert loaded and not list(tmp_path.glob("wordpiece-*.json"))


def test_a_failing_report_artifact_costs_one_line_not_the_report(tmp_path, monkeypatch):
    import dataclasses

    import benchmarks.report as report
    from benchmarks.registry import get_benchmark

    def boom(rows, folder):
        raise RuntimeError("no figure today")

    bench = dataclasses.replace(get_benchmark("pmi_masking"), report_artifacts=boom)
    monkeypatch.setattr(report, "_bench", lambda name: bench)
    ref = pd.read_csv("results/reference/cpu-quick.csv")
    df = ref[ref["benchmark"] == "pmi_masking"]
    text = report.write_report(tmp_path, df).read_text()
    assert "pmi_masking's report artifacts failed: RuntimeError: no figure today" in text
    assert "## pmi_masking" in text and "| metric | variant | role | ours: mean ± std (n)" in text  # the rest is there


def test_seeds_come_from_the_variant_then_the_benchmark_then_the_preset_unless_given():
    from benchmarks.plan import RunOptions, plan, run_id_for

    def seeds(opts):
        out = {}
        for u in plan(opts):
            if u.kind == "variant":
                out.setdefault(u.name, []).append(u.seed)
        return out

    quick = seeds(RunOptions(names=["score_sde"], preset="quick"))
    assert quick["ve_pc"] == quick["ve_p"] == [0, 1, 2] and quick["vp_ode"] == [0, 1]  # reported variants: fewer
    assert set(map(len, seeds(RunOptions(names=["score_sde"], preset="quick", seeds=1)).values())) == {1}
    assert set(map(len, seeds(RunOptions(names=["score_sde"], preset="full")).values())) == {3}
    assert run_id_for(RunOptions(names=["vit"], seeds=2), "f") != run_id_for(RunOptions(names=["vit"], seeds=3), "f")
