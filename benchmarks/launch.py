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

import multiprocessing
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable

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
    """SIGKILL this process group when process ``pid`` exits (a daemon thread polls a pidfd)."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # pragma: no cover  (not Linux >= 5.3, or already gone)
        os.killpg(0, signal.SIGKILL)
        return

    def wait() -> None:
        select.select([pidfd], [], [])
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=wait, name="iclrbench-runner-watch", daemon=True).start()


def _cold_preexec() -> None:
    die_with_parent()


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
                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_cold_preexec,
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
