"""Units in parallel (`--jobs`) and as submitit jobs (`--launcher submitit-local`, the same
path as `--launcher slurm`): same results, same run id, resume without duplicates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.launch import Slots, visible_gpus
from benchmarks.results import read_rows
from tests.support import ROOT, cli

TOY = ["run", "toy", "--preset", "smoke", "--quiet"]


def finished_order(stdout: str) -> list[str]:
    return [line.split("] ", 1)[1].split(" seed")[0] for line in stdout.splitlines() if line.startswith("[")]


def test_slots_give_each_unit_its_own_gpus_and_never_more_than_there_are():
    slots = Slots(jobs=4, devices_per_unit=2, gpus=["0", "1", "2", "3"], threads=None)
    assert slots.take() == (["0", "1"], {"CUDA_VISIBLE_DEVICES": "0,1"})
    ids, env = slots.take()
    assert env == {"CUDA_VISIBLE_DEVICES": "2,3"} and not slots.can_take()
    slots.give_back(ids)
    assert slots.can_take() and slots.take()[1] == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert Slots(jobs=8, devices_per_unit=1, gpus=["0", "1"], threads=None).capacity == 2  # one unit per GPU
    with pytest.raises(ValueError, match="needs 2 GPUs; 1 are visible"):
        Slots(jobs=2, devices_per_unit=2, gpus=["0"], threads=None)


def test_slots_without_gpus_share_the_cores_and_one_job_keeps_the_default():
    cpu = Slots(jobs=2, devices_per_unit=1, gpus=[], threads=None)
    assert cpu.take()[1] == {"ICLRBENCH_THREADS": str(max(1, (os.cpu_count() or 1) // 2))}
    assert Slots(jobs=2, devices_per_unit=1, gpus=[], threads=1).take()[1] == {"ICLRBENCH_THREADS": "1"}
    assert Slots(jobs=1, devices_per_unit=1, gpus=["0", "1"], threads=None).take()[1] == {}  # --jobs 1: as before
    assert Slots(jobs=1, devices_per_unit=2, gpus=[], threads=None).capacity == 2  # one DDP unit with both devices


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus("auto") == ["3", "5"] and visible_gpus("cpu") == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus("gpu") == []


@pytest.mark.slow
def test_two_jobs_give_the_same_rows_and_run_id_and_really_overlap(tmp_path, toy_env):
    args = [*TOY, "--variant", "slow", "--variant", "method", "--variant", "baseline"]
    env = {**toy_env, "TOY_SLEEP": "6"}
    one = cli([*args, "--out", str(tmp_path / "one"), "--jobs", "1", "--threads", "1"], env)
    two = cli([*args, "--out", str(tmp_path / "two"), "--jobs", "2", "--threads", "1"], env)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert finished_order(one.stdout) == ["toy/slow", "toy/method", "toy/baseline"]
    assert finished_order(two.stdout)[-1] == "toy/slow"  # the others ran beside it
    (a,), (b,) = (tmp_path / "one").iterdir(), (tmp_path / "two").iterdir()
    assert a.name == b.name
    key = ["variant", "metric"]
    ra, rb = (read_rows(d / "summary.csv").sort_values(key).reset_index(drop=True) for d in (a, b))
    assert ra[key].equals(rb[key]) and (ra["value"] == rb["value"]).all()


@pytest.mark.slow
def test_parallel_units_on_cpu_get_their_share_of_threads(tmp_path, toy_env):
    out = cli([*TOY, "--variant", "method", "--variant", "baseline", "--jobs", "2", "--out", str(tmp_path)], toy_env)
    assert out.returncode == 0, out.stderr
    df = read_rows(next(tmp_path.iterdir()) / "summary.csv")
    assert set(df.loc[df["metric"] == "threads", "value"]) == {max(1, (os.cpu_count() or 1) // 2)}


@pytest.mark.slow
def test_submitit_jobs_survive_a_killed_runner_and_a_rerun_reattaches_without_resubmitting(tmp_path, toy_env):
    pytest.importorskip("submitit")
    args = [sys.executable, "-m", "benchmarks.cli", *TOY, "--out", str(tmp_path), "--launcher", "submitit-local",
            "--variant", "method", "--variant", "slow"]
    runner = subprocess.Popen(args, cwd=ROOT, env={**toy_env, "TOY_SLEEP": "25"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not (list(tmp_path.glob("*/units/toy__method__s0.csv"))
                                          and list(tmp_path.glob("*/units/toy__slow__s0.job.json"))):
        time.sleep(0.5)
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=30)
    (run_dir,) = tmp_path.iterdir()
    assert not (run_dir / "units" / "toy__slow__s0.csv").exists()  # still running as a job
    again = subprocess.run(args, cwd=ROOT, env={**toy_env, "TOY_SLEEP": "0"}, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "toy/method seed 0: complete, skipped" in again.stdout
    assert len(list((run_dir / "jobs").glob("*_submitted.pkl"))) == 2  # slow was re-attached, not submitted again
    df = read_rows(run_dir / "summary.csv")
    assert set(df["variant"]) == {"method", "slow"} and (df["status"] == "ok").all()
    assert df.loc[df["variant"] == "slow", "wall_s"].iloc[0] > 0
