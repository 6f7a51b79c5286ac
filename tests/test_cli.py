"""The command line as a user meets it: an instant `list`, quiet unit logs, training curves
on disk, warm units that equal cold ones, and no unit outliving a killed runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import registry
from benchmarks.registry import Lazy, get_benchmark, lazy, list_benchmarks
from benchmarks.results import read_rows
from tests.support import ROOT, cli

HEAVY = ("torch", "lightning", "pandas", "numpy", "matplotlib", "transformers", "gensim")
TOY = ["run", "toy", "--preset", "smoke", "--quiet"]


def built_in() -> list[str]:
    """The project's benchmarks (not plugins such as the toy one other tests register in-process)."""
    return [n for n in list_benchmarks() if registry._FACTORIES[n].__module__.startswith("benchmarks.specs.")]


def imported_after(argv: list[str]) -> tuple[int, list[str], str]:
    """Run the CLI in a fresh interpreter; return its exit code and which heavy modules it imported."""
    code = (
        "import sys, json\nfrom benchmarks.cli import main\ntry:\n    rc = main(%r)\nexcept SystemExit as e:\n    rc = e.code\n"
        "print(json.dumps([rc, sorted(m for m in %r if m in sys.modules)]), file=sys.stderr)" % (argv, HEAVY)
    )
    env = {k: v for k, v in os.environ.items() if k != "ICLRBENCH_PLUGINS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    import json

    rc, heavy = json.loads(out.stderr.strip().splitlines()[-1])
    return rc, heavy, out.stdout


@pytest.mark.parametrize("argv, expected_rc", [
    (["list"], 0),
    (["--help"], 0),
    (["run", "--help"], 0),
    (["run", "prformer"], 2),
    (["run", "vit", "--preset", "huge"], 2),
    (["run", "vit", "--variant", "vit2"], 2),
])
def test_list_help_and_bad_names_import_nothing_heavy(argv, expected_rc):
    rc, heavy, _ = imported_after(argv)
    assert rc == expected_rc
    assert heavy == [], f"`iclrbench {' '.join(argv)}` imported {heavy}: a spec imports heavy code at module level"


def test_list_shows_every_benchmark_with_its_claim():
    _, _, stdout = imported_after(["list"])
    for name in built_in():
        assert f"{name}: " in stdout
        assert get_benchmark(name).claim[:40] in stdout


def test_every_lazy_reference_of_every_spec_resolves_to_a_callable():
    refs = []
    for name in built_in():
        bench = get_benchmark(name)
        refs += [bench.run, *bench.extras.values(), *bench.datasets.values()]
    assert refs and all(isinstance(r, Lazy) for r in refs), "specs declare their unit code with lazy(...)"
    for ref in refs:
        assert callable(ref.resolve()), ref.target


def test_lazy_refuses_a_malformed_target_and_binds_keywords():
    with pytest.raises(ValueError, match="'package.module:attr'; got 'os.path.join'"):
        lazy("os.path.join")
    assert lazy("os.path:join")("a", "b") == os.path.join("a", "b")
    assert lazy("builtins:dict", b=2)(a=1) == {"a": 1, "b": 2}


def test_progress_bar_says_epoch_n_not_minus_two_when_the_budget_is_steps():
    from benchmarks.train import StepBudgetProgressBar

    bar = StepBudgetProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)  # what Lightning sets for a max_steps budget
    assert bar._get_train_description(3).strip() == "Epoch 3"
    bar._trainer = SimpleNamespace(max_epochs=5)
    assert bar._get_train_description(3).strip() == "Epoch 3/4"


@pytest.mark.slow
def test_units_log_training_curves_quietly_and_the_report_links_them(tmp_path, toy_env):
    out = cli([*TOY, "--out", str(tmp_path), "--variant", "method", "--variant", "baseline"], toy_env)
    assert out.returncode == 0, out.stderr
    (run_dir,) = tmp_path.iterdir()
    metrics = run_dir / "logs" / "toy__method__s0" / "fit0" / "metrics.csv"
    curve = read_rows(metrics)
    assert curve["train/loss"].notna().sum() == 4  # smoke: 4 steps, one logged point each
    log = (run_dir / "units" / "toy__method__s0.log").read_text()
    for chatter in ("GPU available", "TPU available", "litlogger", "LeafSpec", "/-2"):
        assert chatter not in log
    assert "logs/toy__method__s0/fit0/metrics.csv" in (run_dir / "report.md").read_text()
    off = cli([*TOY, "--out", str(tmp_path / "off"), "--variant", "method", "--logger", "none"], toy_env)
    assert off.returncode == 0, off.stderr
    (off_dir,) = (tmp_path / "off").iterdir()
    assert not (off_dir / "logs").exists()


@pytest.mark.slow
def test_warm_and_cold_units_give_identical_values_under_the_same_run_id(tmp_path, toy_env):
    args = [*TOY, "--variant", "method", "--variant", "baseline"]
    warm = cli([*args, "--out", str(tmp_path / "warm")], toy_env)
    cold = cli([*args, "--out", str(tmp_path / "cold"), "--cold-start"], toy_env)
    assert warm.returncode == 0 and cold.returncode == 0, warm.stderr + cold.stderr
    (w,), (c,) = (tmp_path / "warm").iterdir(), (tmp_path / "cold").iterdir()
    assert w.name == c.name  # how a unit starts is not part of the run id
    key = ["variant", "metric"]
    vw = read_rows(w / "summary.csv").sort_values(key)["value"].to_numpy()
    vc = read_rows(c / "summary.csv").sort_values(key)["value"].to_numpy()
    assert len(vw) == 6 and (vw == vc).all()  # score, curve, threads per variant


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
def test_sigkill_of_the_runner_ends_its_units_and_rerun_resumes(tmp_path, toy_env, cold):
    pidfile = tmp_path / "unit.pid"
    args = [sys.executable, "-m", "benchmarks.cli", *TOY, "--out", str(tmp_path / "runs"), "--variant", "method",
            "--variant", "slow", "--jobs", "1", *(["--cold-start"] if cold else [])]  # one at a time: method ends first
    runner = subprocess.Popen(args, cwd=ROOT, env={**toy_env, "TOY_SLEEP": "300", "TOY_PIDFILE": str(pidfile)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (pidfile.exists() and pidfile.read_text()):
        time.sleep(0.2)
    unit_pid = int(pidfile.read_text())
    assert _alive(unit_pid)
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=30)
    deadline = time.time() + 15
    while time.time() < deadline and _alive(unit_pid):
        time.sleep(0.2)
    if _alive(unit_pid):  # do not leave it behind, then fail
        os.kill(unit_pid, signal.SIGKILL)
        pytest.fail("the unit outlived the runner killed with SIGKILL")
    done = subprocess.run(args, cwd=ROOT, env={**toy_env, "TOY_SLEEP": "0"}, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "toy/method seed 0: complete, skipped" in done.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert set(read_rows(run_dir / "summary.csv")["variant"]) == {"method", "slow"}
