"""One runner per run folder.

A runner holds ``<run>/runner.lock`` while it runs: a JSON record of who holds it (pid, host,
boot id, the process's start time, when, the command line), created atomically
(``O_CREAT | O_EXCL``) and touched every ``HEARTBEAT_S`` seconds by a background thread. A
second runner on the same folder refuses at once with one line naming the holder (exit 2), or,
with ``--wait``, waits for it and then resumes (skipping what the first one completed).

A lock whose holder is gone is stale and is taken over with a line saying so:
- same host and boot: the holder's pid no longer exists, or is another process now (its start
  time differs: the pid was reused);
- same host, another boot id: the machine rebooted;
- another host (a shared filesystem, a SLURM login node): no heartbeat for ``STALE_AFTER_S``
  seconds, since another host's processes cannot be looked at from here.

Standard library only (the CLI imports it before anything heavy).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from benchmarks.errors import RunFolderLocked

LOCK_NAME = "runner.lock"
HEARTBEAT_S = 15.0
STALE_AFTER_S = 120.0  # another host's lock without a heartbeat for this long is stale (8 missed heartbeats)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22); '' where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def holder_text(h: dict[str, Any]) -> str:
    return f"pid {h.get('pid', '?')} on {h.get('host', '?')}, started {h.get('started', '?')}"


def stale_reason(h: dict[str, Any], age_s: float) -> str:
    """Why the holder ``h`` of a lock last touched ``age_s`` seconds ago is gone ('' if it may be alive)."""
    host, boot = socket.gethostname(), _boot_id()
    if h.get("host") != host:
        return f"no heartbeat from {h.get('host')} for {age_s:.0f} s" if age_s > STALE_AFTER_S else ""
    if h.get("boot_id") and boot and h.get("boot_id") != boot:
        return "this machine has rebooted since"
    pid = int(h.get("pid", -1))
    if pid <= 0 or not _alive(pid):
        return f"process {pid} no longer exists"
    if h.get("proc_start") and _start_ticks(pid) and _start_ticks(pid) != h.get("proc_start"):
        return f"process {pid} is another program now (the pid was reused)"
    return ""


class RunLock:
    """``with RunLock(run_dir, wait=False, echo=print):`` holds the run folder for this runner."""

    def __init__(self, run_dir: str | Path, wait: bool = False, echo: Callable[[str], None] = print,
                 poll_s: float = 1.0) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.wait, self.echo, self.poll_s = wait, echo, poll_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self) -> dict[str, Any]:
        pid = os.getpid()
        return {"pid": pid, "host": socket.gethostname(), "boot_id": _boot_id(), "proc_start": _start_ticks(pid),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv), "token": self.token}

    def read(self) -> tuple[dict[str, Any], float] | None:
        """The holder's record and the seconds since its last heartbeat; None when there is no lock."""
        for _ in range(20):  # a lock being written by its creator: read again shortly
            try:
                text, mtime = self.path.read_text(), self.path.stat().st_mtime
            except FileNotFoundError:
                return None
            try:
                return json.loads(text), max(0.0, time.time() - mtime)
            except json.JSONDecodeError:
                time.sleep(0.05)
        return {"pid": -1, "host": "?", "started": "?"}, max(0.0, time.time() - self.path.stat().st_mtime)

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self.record(), f)
        return True

    def _take_over(self) -> bool:
        tmp = self.path.with_name(f"{LOCK_NAME}.{self.token}")
        tmp.write_text(json.dumps(self.record()))
        os.replace(tmp, self.path)
        time.sleep(0.2)  # two takers at once: the last replace wins, the other sees it and backs off
        current = self.read()
        return current is not None and current[0].get("token") == self.token

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        announced = False
        while True:
            if self._create():
                break
            current = self.read()
            if current is None:
                continue  # released between the two calls
            holder, age = current
            why = stale_reason(holder, age)
            if why:
                if self._take_over():
                    self.echo(f"run folder {self.path.parent}: taking over the lock of a runner that is gone "
                              f"({holder_text(holder)}; {why})")
                    break
                continue
            if not self.wait:
                raise RunFolderLocked(
                    f"run folder {self.path.parent} is in use by another iclrbench runner ({holder_text(holder)}); "
                    "wait for it with --wait (the rerun then skips what it completed), or stop that runner")
            if not announced:
                self.echo(f"run folder {self.path.parent} is in use by another runner ({holder_text(holder)}); "
                          "waiting for it (--wait)")
                announced = True
            time.sleep(self.poll_s)
        self._thread = threading.Thread(target=self._heartbeat, name="iclrbench-lock-heartbeat", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        current = self.read()
        if current is not None and current[0].get("token") == self.token:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
