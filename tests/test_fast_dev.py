"""Fast dev runs (issue 30): the flag's plumbing, the marked rows, compare's refusal, the report, stand-in data read by
the real loaders, and the full presets' parameter counts beside the papers'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.plan import RunOptions, plan, run_id_for
from benchmarks.registry import get_benchmark, list_benchmarks
from benchmarks.results import is_fast_dev, read_results, write_csv
from tests.support import rows as row

REPO = Path(__file__).resolve().parent.parent


def project_benchmarks() -> list[str]:
    """The ten papers' specs (not a plugin the harness tests register, such as the toy benchmark)."""
    return [n for n in list_benchmarks() if getattr(get_benchmark(n).run, "target", "").startswith("benchmarks.units.")]


# ----------------------------------------------------------------------------------- plan
def test_fast_dev_run_plans_one_seed_with_budgets_cut_and_the_cpu_batch_capped(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: the spec's CPU cap applies
    opts = RunOptions(names=["vit"], preset="full", fast_dev_run=True)
    units = plan(opts)
    assert {u.seed for u in units} == {0} and {u.dataset for u in units} == {"cifar10"}
    run = next(u for u in units if u.name == "vit")
    assert run.config["embed_dim"] == 384 and run.config["depth"] == 12  # the preset's model
    assert run.config["data_fractions"] == [0.1] and run.config["batch_size"] == 8
    assert run.real_batch == {"batch_size": 128}
    assert run_id_for(opts, "abc1234").startswith("full-fastdev-")


def test_fast_dev_batch_and_set_override_the_cap_and_gpus_keep_the_real_batch(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    capped = plan(RunOptions(names=["vit"], preset="full", fast_dev_run=True, fast_dev_batch=4, extras=False))
    assert {u.config["batch_size"] for u in capped} == {4}
    set_wins = plan(RunOptions(names=["vit"], preset="full", fast_dev_run=True, overrides={"vit.batch_size": 32}, extras=False))
    assert {u.config["batch_size"] for u in set_wins} == {32} and all(not u.real_batch for u in set_wins)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    gpu = plan(RunOptions(names=["vit"], preset="full", fast_dev_run=True, extras=False))
    assert {u.config["batch_size"] for u in gpu} == {128} and all(not u.real_batch for u in gpu)


def test_fast_dev_batch_without_fast_dev_run_is_refused():
    with pytest.raises(ValueError, match="--fast-dev-batch applies to --fast-dev-run only"):
        plan(RunOptions(names=["vit"], fast_dev_batch=4))


def test_every_full_preset_runs_a_real_dataset_and_declares_its_fast_dev_run():
    assert len(project_benchmarks()) == 10
    for name in project_benchmarks():
        bench = get_benchmark(name)
        assert bench.tasks.get("full"), f"{name}: full names the paper's dataset(s)"
        assert bench.default_dataset not in bench.tasks["full"], name
        assert bench.fast_dev.config or bench.fast_dev.batch_keys, name
        assert bench.paper_architecture and bench.param_count is not None, name


# --------------------------------------------------------------------------- param counts
def _counts():
    for name in project_benchmarks():
        bench = get_benchmark(name)
        task = next(iter(bench.tasks["full"]))
        for p in bench.paper_params:
            yield pytest.param(bench, task, p, id=f"{name}-{p.variant}")


@pytest.mark.parametrize("bench, task, paper", list(_counts()))
def test_full_preset_parameter_count_is_the_papers_within_its_tolerance(bench, task, paper):
    ours = bench.param_count(bench.config("full", paper.variant, task=task), paper.variant)
    assert ours > 0
    if paper.params is None:
        assert "none" in paper.source.lower(), "a missing count says so in its source"
        return
    assert abs(ours / paper.params - 1) <= paper.tolerance, (
        f"{bench.name}/{paper.variant}: ours {ours:,} vs the paper's {paper.params:,} ({paper.source}); {paper.note}")


def test_every_variant_has_a_declared_paper_parameter_count():
    for name in project_benchmarks():
        bench = get_benchmark(name)
        declared = {p.variant for p in bench.paper_params}
        trained = {v.name for v in bench.variants} - {"bm25", "random_hash", "random_dense"}  # nothing trained
        assert trained <= declared, f"{name}: {sorted(trained - declared)} lack a paper_params entry"


# ------------------------------------------------------------------------ marked results
def _dev_rows(n: int = 2) -> pd.DataFrame:
    df = pd.concat([row(seed=s) for s in range(n)], ignore_index=True)
    df["fast_dev_run"] = True
    return df


def test_fast_dev_rows_are_marked_and_old_csvs_read_as_not_fast_dev(tmp_path):
    write_csv(tmp_path / "dev.csv", _dev_rows())
    write_csv(tmp_path / "old.csv", pd.concat([row(seed=0)], ignore_index=True))
    assert is_fast_dev(read_results(tmp_path / "dev.csv"))
    assert not is_fast_dev(read_results(tmp_path / "old.csv"))


@pytest.mark.parametrize("side", ["run", "against"])
def test_compare_refuses_fast_dev_rows_with_exit_2_and_one_line(tmp_path, side):
    write_csv(tmp_path / "dev.csv", _dev_rows())
    write_csv(tmp_path / "real.csv", pd.concat([row(seed=s) for s in range(2)], ignore_index=True))
    run, against = ("dev.csv", "real.csv") if side == "run" else ("real.csv", "dev.csv")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "compare", str(tmp_path / run), "--against",
                           str(tmp_path / against)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    assert "fast dev run" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_report_of_a_fast_dev_run_is_the_per_unit_table(tmp_path):
    from benchmarks.report import write_report

    df = _dev_rows(1)
    df["dataset"] = "cifar10 (stand-in)"
    write_csv(tmp_path / "summary.csv", df)
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "toy__method__s0.dev.json").write_text(json.dumps(
        {"benchmark": "toy", "unit": "method", "status": "ok", "params": 1000, "what": "train step", "batch": 8,
         "step_s": 0.5, "step_peak_mb": 100.0, "memory": "process RSS", "real_batch": {"batch_size": 64}, "wall_s": 3.0}))
    text = write_report(tmp_path).read_text()
    assert "(fast dev run)" in text and "not results" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| toy | method"))
    assert "8 of 64" in line and "| 4 |" in line and "800" in line  # 0.5 s x 8 and 100 MiB x 8, extrapolated


# --------------------------------------------------------------------------- stand-in data
SMALL = {
    "cifar10": lambda f: __import__("datamodules.standin").standin.write_cifar10(f, n_per_batch=4, n_test=4),
    "cifar100": lambda f: __import__("datamodules.standin").standin.write_cifar100(f, n_train=8, n_test=4),
    "emnist": lambda f: __import__("datamodules.standin").standin.write_emnist(f, n_train=40, n_test=8),
    "mnist": lambda f: __import__("datamodules.standin").standin.write_mnist(f, n_train=8, n_test=4),
    "listops_lra": lambda f: __import__("datamodules.standin").standin.write_listops_lra(
        f, {"train": 4, "val": 2, "test": 2}, min_length=10, max_length=40),
}


def _load(name: str, folder: Path):
    if name == "cifar10":
        from datamodules.images import load_cifar10
        return load_cifar10(folder, download=False)["train"][0].shape[1:]
    if name == "cifar100":
        from datamodules.federated import load_cifar100
        return tuple(load_cifar100(folder, download=False)["train"][0].shape[1:])
    if name == "emnist":
        from datamodules.federated import load_emnist
        return tuple(load_emnist(folder)["train"][0].shape[1:])
    if name == "mnist":
        from datamodules.digit_sequences import load_mnist
        return tuple(load_mnist(folder)["train"][0].shape[1:])
    from datamodules.sequences import LRA_LISTOPS_FILES, read_lra_listops
    return len(read_lra_listops(folder / "listops" / LRA_LISTOPS_FILES["train"]))


@pytest.mark.parametrize("name, shape", [("cifar10", (3, 32, 32)), ("cifar100", (3, 32, 32)), ("emnist", (1, 28, 28)),
                                         ("mnist", (1, 28, 28)), ("listops_lra", 4)])
def test_stand_in_files_are_read_by_the_real_loaders(tmp_path, name, shape):
    SMALL[name](tmp_path)
    assert _load(name, tmp_path) == shape


def test_text_retrieval_and_kilt_stand_ins_are_read_by_the_real_loaders(tmp_path):
    from datamodules.corpora import read_plain_text, read_wikitext
    from datamodules.entities import load_kilt
    from datamodules.retrieval import load_beir, load_msmarco
    from datamodules.standin import stand_in

    assert len(read_wikitext(stand_in("wikitext", tmp_path) / "wiki.train.raw")) > 50
    assert len(read_plain_text(stand_in("plain", tmp_path) / "train.txt")) > 50
    for loader, name in ((load_msmarco, "msmarco"), (load_beir, "beir")):
        data = loader(stand_in(name, tmp_path))
        assert len(data.passages) == 128 and len(data.train_queries) == 64 and len(data.test_queries) == 16
    kilt = stand_in("aida", tmp_path)
    assert len(load_kilt("aida", kilt).train) == 512 and len(load_kilt("wned", kilt).test) == 256
    with pytest.raises(ValueError, match="no stand-in for dataset 'imagenet'"):
        stand_in("imagenet", tmp_path)


def test_a_missing_dataset_is_exit_3_without_stand_in_data(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "run", "rims", "--preset", "full", "--fast-dev-run",
                           "--data-dir", str(tmp_path), "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 3 and "MNIST not found" in proc.stderr
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_fast_dev_run_of_a_full_preset_on_stand_in_data(tmp_path):
    """fedopt's full preset (EMNIST CR, 3,400 clients) on stand-in EMNIST, one variant: ok, rows marked, the table."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "ICLRBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", "run", "fedopt", "--preset", "full", "--fast-dev-run",
                           "--stand-in-data", "--out", str(tmp_path / "runs"), "--quiet", "--variant", "fedadam",
                           "--no-extras"], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    df = read_results(run_dir / "summary.csv")
    assert is_fast_dev(df) and (df["status"] == "ok").all() and set(df["dataset"]) == {"emnist (stand-in)"}
    params = df[df["metric"] == "dev_params"]
    assert set(params["value"]) == {1_206_590.0}
    report = (run_dir / "report.md").read_text()
    assert "fast dev run" in report and "1.21 M" in report and "federated round" in report


def test_the_dev_table_names_each_units_own_task(tmp_path):
    """A preset of several tasks (drq: cartpole_swingup and reacher_easy) gets one row per task, each with its dataset."""
    import json

    import pandas as pd

    from benchmarks.devreport import dev_table

    (tmp_path / "units").mkdir()
    for task in ("cartpole_swingup", "reacher_easy"):
        (tmp_path / "units" / f"drq__sac__{task}__s0.dev.json").write_text(json.dumps(
            dict(benchmark="drq", unit="sac", status="ok", params=10, what=task, batch=4, step_s=1.0, step_peak_mb=5.0)))
    df = pd.DataFrame([dict(benchmark="drq", variant="sac", dataset=t) for t in ("cartpole_swingup", "reacher_easy")])
    rows = [line.split(" | ") for line in dev_table(tmp_path, df)[2:]]
    assert [(r[2], r[6]) for r in rows] == [("cartpole_swingup", "cartpole_swingup"), ("reacher_easy", "reacher_easy")]
