"""The results schema (DESIGN.md): long format, one row per measurement.

Everything that writes results goes through :func:`atomic_write_text` /
:func:`write_csv` (write a temporary file beside the target, then ``os.replace``), so an
interrupted run never leaves a half-written file and never loses rows already written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

import pandas as pd

SCHEMA = [
    "run_id", "benchmark", "variant", "role", "dataset", "preset", "seed", "metric", "value",
    "higher_is_better", "step", "status", "error", "wall_s", "peak_mem_mb", "accelerator", "devices",
    "strategy", "precision", "device_name", "torch", "lightning", "git_sha", "git_dirty", "config_hash",
    "timestamp",
]
KEY = ["benchmark", "variant", "dataset", "preset", "metric"]


class BadResultsError(ValueError):
    """A results CSV that is missing, empty, malformed or lacks schema columns (exit 2)."""


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv(path: str | Path, df: pd.DataFrame) -> None:
    """Write ``df`` with the schema's columns first (extra columns, like ``source``, after)."""
    extra = [c for c in df.columns if c not in SCHEMA]
    atomic_write_text(path, df.reindex(columns=SCHEMA + extra).to_csv(index=False))


def read_rows(path: str | Path) -> pd.DataFrame:
    """``pd.read_csv`` where only empty cells are missing: a variant named ``nan`` or
    ``None`` stays a string (pandas' default would turn it into NaN)."""
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for col in ("value", "step", "seed", "wall_s", "peak_mem_mb"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def read_results(path: str | Path, what: str = "results CSV") -> pd.DataFrame:
    """Read and validate a results CSV; :class:`BadResultsError` says what is wrong."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.csv"
    if not path.is_file():
        raise BadResultsError(f"{what} not found: {path}")
    try:
        df = read_rows(path)
    except pd.errors.EmptyDataError:
        raise BadResultsError(f"{what} is empty: {path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BadResultsError(f"{what} is not a readable CSV: {path} ({str(exc).splitlines()[0]})") from None
    missing = [c for c in SCHEMA if c not in df.columns]
    if missing:
        raise BadResultsError(f"{what} {path} lacks schema columns: {', '.join(missing)}")
    if df.empty:
        raise BadResultsError(f"{what} has a header but no rows: {path}")
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["step"] = pd.to_numeric(df["step"], errors="coerce")
    df["higher_is_better"] = df["higher_is_better"].map(_as_bool)
    df["error"] = df["error"].fillna("")
    return df


def _as_bool(v) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        return {"true": True, "false": False}.get(v.strip().lower())
    if pd.isna(v):
        return None
    return bool(v)


def concat_rows(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=SCHEMA)
    return pd.concat(frames, ignore_index=True)
