"""One runner per run folder (benchmarks/lock.py): a second runner refuses or waits, a lock left
by a killed runner is taken over, and a unit whose measurements are timings runs alone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.lock import LOCK_NAME, STALE_AFTER_S, RunLock, _boot_id, _start_ticks, stale_reason
from benchmarks.results import read_rows
from tests.support import ROOT, cli

TOY = ["run", "toy", "--preset", "smoke", "--quiet"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _plant(run_dir: Path, age_s: float = 0.0, **holder) -> None:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(), "started": "then", **holder}
    path = run_dir / LOCK_NAME
    path.write_text(json.dumps(record))
    if age_s:
        os.utime(path, (time.time() - age_s, time.time() - age_s))


# ------------------------------------------------------------------------------ the rule
def test_stale_reasons():
    me = {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": os.getpid(), "proc_start": _start_ticks(os.getpid())}
    assert stale_reason(me, 0.0) == ""  # this very process: alive
    assert "no longer exists" in stale_reason({**me, "pid": _dead_pid()}, 0.0)
    assert "reused" in stale_reason({**me, "proc_start": "1"}, 0.0)
    assert "rebooted" in stale_reason({**me, "boot_id": "another-boot"}, 0.0)
    other = {**me, "host": "elsewhere", "pid": 1}
    assert stale_reason(other, 10.0) == ""  # another host's runner with a fresh heartbeat may be alive
    assert "no heartbeat from elsewhere" in stale_reason(other, STALE_AFTER_S + 1)


def test_lock_is_exclusive_and_released(tmp_path):
    with RunLock(tmp_path) as first:
        held = json.loads((tmp_path / LOCK_NAME).read_text())
        assert held["pid"] == os.getpid() and held["token"] == first.token
        with pytest.raises(Exception, match="in use by another iclrbench runner"):
            RunLock(tmp_path).acquire()  # this process is alive: not stale
    assert not (tmp_path / LOCK_NAME).exists()


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_a_second_runner_refuses_at_once_or_waits_and_skips_what_the_first_completed(tmp_path, toy_env):
    args = [*TOY, "--out", str(tmp_path), "--variant", "method", "--variant", "slow", "--jobs", "1"]
    first = subprocess.Popen([sys.executable, "-m", "benchmarks.cli", *args], cwd=ROOT, env={**toy_env, "TOY_SLEEP": "15"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(f"*/{LOCK_NAME}")):
        time.sleep(0.2)
    second = cli(args, {**toy_env, "TOY_SLEEP": "0"})
    assert second.returncode == 2  # refused (a runner that waited would have exited 0 after the first)
    err = second.stderr.strip()
    assert err.count("\n") == 0 and f"pid {first.pid} on {socket.gethostname()}" in err and "--wait" in err
    waiter = cli([*args, "--wait"], {**toy_env, "TOY_SLEEP": "0"}, timeout=300)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0 and waiter.returncode == 0, waiter.stderr
    assert "waiting for it (--wait)" in waiter.stdout and waiter.stdout.count("complete, skipped") == 2
    assert out.count(": ok in ") == 2  # the first runner ran both units, once
    (run_dir,) = tmp_path.iterdir()
    assert set(read_rows(run_dir / "summary.csv")["variant"]) == {"method", "slow"}
    assert not (run_dir / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_stale_lock_is_taken_over_and_another_hosts_fresh_lock_is_not(tmp_path, toy_env):
    args = [*TOY, "--out", str(tmp_path), "--variant", "method"]
    assert cli(args, toy_env).returncode == 0
    (run_dir,) = tmp_path.iterdir()
    _plant(run_dir, pid=_dead_pid())  # a runner killed with SIGKILL
    again = cli(args, toy_env)
    assert again.returncode == 0 and "taking over the lock" in again.stdout and "no longer exists" in again.stdout
    assert "complete, skipped" in again.stdout and not (run_dir / LOCK_NAME).exists()
    _plant(run_dir, host="login-node-2", pid=1)  # a live runner on another host sharing the filesystem
    refused = cli(args, toy_env)
    assert refused.returncode == 2 and "login-node-2" in refused.stderr
    assert (run_dir / LOCK_NAME).exists() and len(read_rows(run_dir / "summary.csv")) > 0  # nothing lost
    _plant(run_dir, age_s=STALE_AFTER_S + 60, host="login-node-2", pid=1)  # that node went down
    taken = cli(args, toy_env)
    assert taken.returncode == 0 and "no heartbeat from login-node-2" in taken.stdout


@pytest.mark.slow
def test_a_timing_unit_never_overlaps_another(tmp_path, toy_env):
    times = tmp_path / "times.txt"
    args = [*TOY, "--out", str(tmp_path / "runs"), "--jobs", "2", "--variant", "timed", "--variant", "slow",
            "--variant", "method", "--variant", "baseline"]
    out = cli(args, {**toy_env, "TOY_SLEEP": "3", "TOY_TIMES": str(times)})
    assert out.returncode == 0, out.stderr
    spans = {v: (float(a), float(b)) for v, a, b in (line.split() for line in times.read_text().splitlines())}
    t0, t1 = spans.pop("timed")
    assert all(b <= t0 or a >= t1 for a, b in spans.values()), (t0, t1, spans)
    a, b = spans["slow"]
    assert any(x < b and y > a for v, (x, y) in spans.items() if v != "slow")  # the others still ran side by side
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["execution"]["alone"] == ["toy/timed"]
