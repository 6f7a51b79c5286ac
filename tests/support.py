"""Helpers shared by the harness tests: the CLI in a subprocess, a results row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from benchmarks.results import SCHEMA

ROOT = Path(__file__).resolve().parent.parent


def cli(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """``iclrbench ARGS`` in a fresh interpreter, from the repository root."""
    return subprocess.run([sys.executable, "-m", "benchmarks.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def rows(**over) -> pd.DataFrame:
    """One results row of the toy benchmark, with ``over`` changed."""
    base = dict(run_id="r", benchmark="toy", variant="method", role="method", dataset="synthetic", preset="smoke",
                seed=0, metric="score", value=0.9, higher_is_better=True, step=None, status="ok", error="",
                wall_s=1.0, peak_mem_mb=1.0, accelerator="cpu", devices=1, strategy="auto", precision="32-true",
                device_name="cpu x2", torch="2", lightning="2", git_sha="x", git_dirty=False, config_hash="h",
                timestamp="t")
    base.update(over)
    return pd.DataFrame([base], columns=SCHEMA)
