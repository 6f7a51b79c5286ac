"""Start one unit in a process of its own, warm or cold, and watch it.

Importing torch and Lightning takes about 6 s of CPU here (torchmetrics pulls in
torchvision), longer than a smoke unit's training. So by default a unit is *forked from a
warm worker*: the standard library's ``forkserver``, started once per run with torch,
Lightning and the run's unit modules preloaded. Each unit is still a new process of its
own (its own memory, globals, seeds, peak-memory count and time-out); it only skips the
imports. The worker imports and computes nothing else, so every unit forks from the same
pristine state.

A unit that launches processes of its own through Lightning (``--devices`` > 1 or
``--num-nodes`` > 1: Lightning's DDP re-executes the command line for ranks >= 1) and any
run with ``--cold-start`` start a fresh interpreter (``python -m benchmarks.unit JOB``).

Either way the unit leads its own process group (so a time-out kills what it started)
and ends that group when the runner ends, however it ends (SIGKILL included): a cold unit
asks the kernel for it (``PR_SET_PDEATHSIG``); a warm unit, whose parent is the forkserver,
waits on a pidfd of the runner in a daemon thread. Output goes to the unit's log file;
:class:`Echo` copies it to the terminal.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from benchmarks.plan import visible_gpus  # noqa: F401  (re-exported)
from benchmarks.results import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parent.parent
WARM_MODULES = ("torch", "lightning", "benchmarks.unit", "benchmarks.train")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(expected_parent: int | None = None) -> None:
    """Linux: have the kernel SIGKILL this process when its parent exits (else a no-op)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (OSError, AttributeError):  # pragma: no cover  (not Linux)
        return
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)  # the parent died before the request took effect


def end_group_with(pid: int) -> None:
    """SIGKILL this process group when process ``pid`` exits: a daemon thread waits on a pidfd
    (Linux >= 5.3), or else checks every second that ``pid`` still exists."""

    def end() -> None:
        os.killpg(0, signal.SIGKILL)

    def alive() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # already gone
            end()
            return
        except OSError:  # pragma: no cover  (a kernel without pidfds)
            pidfd = None
    else:  # pragma: no cover  (not Linux)
        pidfd = None

    def wait() -> None:
        if pidfd is not None:
            select.select([pidfd], [], [])
        else:
            while alive():
                time.sleep(1.0)
        end()

    threading.Thread(target=wait, name="iclrbench-runner-watch", daemon=True).start()


def _warm_entry(job_path: str, log_path: str, env: dict[str, str], runner_pid: int) -> None:
    """Runs in the process forked from the warm worker: become a unit like a cold one."""
    os.setsid()
    die_with_parent()  # the forkserver
    end_group_with(runner_pid)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(REPO_ROOT)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # line-buffered, like PYTHONUNBUFFERED
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    from benchmarks.unit import main

    code = main([job_path])
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


class WarmWorker:
    """The forkserver, preloaded once per run (per runner process)."""

    def __init__(self, modules: Iterable[str] = ()) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload([*WARM_MODULES, *modules])


class UnitProcess:
    """One running unit: ``wait(timeout)``, ``kill()``, ``returncode``."""

    def __init__(self, job_path: Path, log_path: Path, env: dict[str, str], worker: WarmWorker | None) -> None:
        self.log_path = log_path
        log_path.write_bytes(b"")
        if worker is not None:
            self._proc = worker.context.Process(target=_warm_entry, args=(str(job_path), str(log_path), env, os.getpid()), daemon=False)
            self._proc.start()
            self.pid = self._proc.pid
            self._popen = None
        else:
            with open(log_path, "ab") as log:
                self._popen = subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.unit", str(job_path)], cwd=REPO_ROOT, env=env, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=functools.partial(die_with_parent, os.getpid()),
                )
            self.pid = self._popen.pid
            self._proc = None

    def wait(self, timeout: float | None) -> bool:
        """True if the unit ended within ``timeout`` seconds."""
        if self._popen is not None:
            try:
                self._popen.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        self._proc.join(timeout)
        return self._proc.exitcode is not None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else self._proc.exitcode

    def kill(self) -> None:
        """SIGKILL the unit's process group (its DDP ranks, data workers ...), then reap it."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._popen is not None:
            self._popen.kill()
            self._popen.wait()
        else:
            self._proc.kill()
            self._proc.join()


class Echo:
    """Copy what a unit writes to its log file onto the terminal while it runs."""

    def __init__(self, log_path: Path, enabled: bool) -> None:
        self._path, self._stop = log_path, threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True) if enabled else None
        if self._thread:
            self._thread.start()

    def _follow(self) -> None:
        with open(self._path, "rb") as f:
            while True:
                chunk = f.read(65536)
                if chunk:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                elif self._stop.is_set():
                    return
                else:
                    time.sleep(0.05)

    def close(self) -> None:
        if self._thread:
            self._stop.set()
            self._thread.join(timeout=5)


# ------------------------------------------------------------------- sharing the machine
class Slots:
    """``--jobs N`` slots: a unit takes as many as it uses devices. With GPUs, a slot is a
    GPU (the unit sees only its own through ``CUDA_VISIBLE_DEVICES``); without, a share of
    the CPU cores (``threads`` torch threads per unit)."""

    def __init__(self, jobs: int, devices_per_unit: int, gpus: list[str], threads: int | None, share_cores: bool = True) -> None:
        if jobs < 1:
            raise ValueError(f"--jobs must be at least 1; got {jobs}")
        self.per_unit = max(1, devices_per_unit)
        self.capacity = max(jobs, self.per_unit)  # --jobs 1 --devices 2: one unit with both devices
        if gpus and jobs > 1:
            if len(gpus) < self.per_unit:
                raise ValueError(f"a unit needs {self.per_unit} GPUs; {len(gpus)} are visible")
            self.capacity = min(self.capacity, len(gpus))
        self.free = list(gpus[: self.capacity]) if gpus and jobs > 1 else [str(i) for i in range(self.capacity)]
        self.gpus = bool(gpus) and jobs > 1
        shared = share_cores and jobs > 1 and not gpus  # units on this machine's cores split them
        self.threads = threads or (max(1, (os.cpu_count() or 1) // self.capacity) if shared else None)

    def can_take(self) -> bool:
        return len(self.free) >= self.per_unit

    def take(self) -> tuple[list[str], dict[str, str]]:
        """Slot ids and the unit's environment for them."""
        ids, self.free = self.free[: self.per_unit], self.free[self.per_unit:]
        env = {"CUDA_VISIBLE_DEVICES": ",".join(ids)} if self.gpus else {}
        if self.threads:
            env["ICLRBENCH_THREADS"] = str(self.threads)
        return ids, env

    def give_back(self, ids: list[str]) -> None:
        self.free += ids


# ------------------------------------------------------------------ SLURM through submitit
def job_main(job_path: str, log_path: str) -> int:
    """What a submitit job runs (a SLURM task, or submitit's local executor): the unit, with
    its output in the unit's log file."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    from benchmarks.unit import main

    return main([job_path])


class SubmititJob:
    """A unit submitted as a job (or re-attached to one): the :class:`UnitProcess` interface."""

    def __init__(self, job: Any, alive: Callable[[], bool]) -> None:
        self.job, self._alive = job, alive

    def wait(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._alive():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())) if deadline else 0.5)
        return True

    @property
    def returncode(self) -> int | None:
        return None if self._alive() else 0  # the unit's own outcome is in its result file

    def kill(self) -> None:
        self.job.cancel(check=False)
        self.wait(30)


SUBMITIT_CLUSTERS = {"slurm": "slurm", "submitit-local": "local"}


class SubmititLauncher:
    """``--launcher slurm``: each unit becomes a SLURM job through submitit (``submitit-local``:
    the same path on this machine, through submitit's local executor). Jobs outlive the
    runner, so each unit's job id is recorded beside it (``units/<unit>.job.json``): a rerun
    re-attaches to a job that is still queued or running instead of submitting it again, and
    collects the result of one that finished while no runner was watching."""

    def __init__(self, launcher: str, run_dir: Path, parameters: dict[str, Any]) -> None:
        try:
            import submitit
        except ImportError:
            raise ValueError(f"--launcher {launcher} needs submitit (pip install 'iclrbench[slurm]'); it is not installed") from None
        self.submitit, self.cluster = submitit, SUBMITIT_CLUSTERS[launcher]
        self.folder = run_dir / "jobs"
        self.executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        self.parameters = {k: v for k, v in parameters.items() if v is not None}

    def _alive_fn(self, job_id: str) -> Callable[[], bool]:
        if self.cluster == "local":  # the job id is the controller's pid, reparented when the runner died
            def alive() -> bool:
                try:
                    stat = Path(f"/proc/{job_id}/stat").read_text()
                    cmdline = Path(f"/proc/{job_id}/cmdline").read_bytes()
                except OSError:
                    return False
                return stat.split(")")[-1].split()[0] != "Z" and b"submitit" in cmdline
            return alive
        job = self.submitit.SlurmJob(folder=self.folder, job_id=job_id)
        return lambda: not job.done(force_check=True)

    def attach(self, record: Path) -> SubmititJob | None:
        """The recorded job of a unit if it is still queued or running, else None."""
        try:
            job_id = json.loads(record.read_text())["job_id"]
        except (OSError, ValueError, KeyError):
            return None
        alive = self._alive_fn(job_id)
        if not alive():
            return None
        job = self.submitit.SlurmJob(folder=self.folder, job_id=job_id) if self.cluster == "slurm" else _LocalHandle(job_id)
        return SubmititJob(job, alive)

    def submit(self, stem: str, job_path: Path, log_path: Path, record: Path, timeout_s: float, devices: int) -> SubmititJob:
        params = dict(self.parameters)
        params.setdefault("timeout_min", int(math.ceil(timeout_s / 60)) + 1)
        if devices > 1:
            params.setdefault("tasks_per_node", devices)  # Lightning's SLURM environment: one task per device
        self.executor.update_parameters(name=f"iclrbench-{stem}", **params)
        try:
            job = self.executor.submit(job_main, str(job_path), str(log_path))
        except Exception as exc:  # sbatch missing, a refused partition ...: the run cannot go on
            raise ValueError(f"submitting {stem} to {self.cluster} failed: {type(exc).__name__}: {str(exc).strip()[:300]}") from exc
        atomic_write_text(record, json.dumps({"launcher": self.cluster, "job_id": str(job.job_id)}))
        return SubmititJob(job, lambda: not job.done())


class _LocalHandle:
    """A re-attached submitit-local job: cancel = SIGINT to its controller (as submitit does)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def cancel(self, check: bool = True) -> None:
        try:
            os.kill(int(self.job_id), signal.SIGINT)
        except ProcessLookupError:
            pass
