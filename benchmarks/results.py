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

from benchmarks.errors import BadResultsError  # noqa: F401  (raised here; re-exported)

SCHEMA = [
    "run_id", "benchmark", "variant", "role", "dataset", "preset", "seed", "metric", "value",
    "higher_is_better", "step", "status", "error", "wall_s", "peak_mem_mb", "accelerator", "devices",
    "strategy", "precision", "device_name", "torch", "lightning", "git_sha", "git_dirty", "config_hash",
    "timestamp",
]
KEY = ["benchmark", "variant", "dataset", "preset", "metric"]
# Optional columns, after the schema's: ``fast_dev_run`` (True on every row of a ``--fast-dev-run``; absent from
# older CSVs and from real runs, which read as False). Such rows prove a code path; they are never results.
FAST_DEV = "fast_dev_run"
# Read as strings, never guessed: a config_hash like ``92e25915`` or ``1234e5`` is a float to
# pandas (``inf``), a git sha of digits an integer, a torch version ``2.10`` the float 2.1.
TEXT = ["run_id", "benchmark", "variant", "role", "dataset", "preset", "metric", "status", "error", "accelerator",
        "devices", "strategy", "precision", "device_name", "torch", "lightning", "git_sha", "config_hash", "timestamp"]
NUMERIC = ["value", "step", "seed", "wall_s", "peak_mem_mb"]
_NAN_WORDS = {"nan", "+nan", "-nan"}




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
    """``pd.read_csv`` where only empty cells are missing (a variant named ``nan`` or
    ``None`` stays a string) and the text columns are strings (:data:`TEXT`). Numeric
    columns are parsed leniently here (a word becomes NaN); :func:`read_results`, the
    reader of CSVs given by users, refuses such values instead."""
    df = _read_text(path)
    for col in NUMERIC:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _read_text(path: str | Path) -> pd.DataFrame:
    header = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={c: str for c in TEXT if c in header})


def _strict_numeric(df: pd.DataFrame, col: str, what: str, path: Path) -> pd.Series:
    """``df[col]`` as floats; a cell that is neither empty, a number, ``nan`` nor ``inf`` is an error."""
    parsed = pd.to_numeric(df[col], errors="coerce")
    raw = df[col].astype(str).str.strip().str.lower()
    bad = df[col].notna() & parsed.isna() & ~raw.isin(_NAN_WORDS)
    if bad.any():
        i = bad.to_numpy().nonzero()[0]
        raise BadResultsError(
            f"{what} {path}: non-numeric {col} {df[col].iloc[i[0]]!r} on line {i[0] + 2}"
            + (f" (and {len(i) - 1} more)" if len(i) > 1 else "")
        )
    return parsed.astype(float)


def read_results(path: str | Path, what: str = "results CSV") -> pd.DataFrame:
    """Read and validate a results CSV; :class:`BadResultsError` says what is wrong."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.csv"
    if not path.is_file():
        raise BadResultsError(f"{what} not found: {path}")
    try:
        df = _read_text(path)
    except pd.errors.EmptyDataError:
        raise BadResultsError(f"{what} is empty: {path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise BadResultsError(f"{what} is not a readable CSV: {path} ({str(exc).strip().splitlines()[0]})") from None
    missing = [c for c in SCHEMA if c not in df.columns]
    if missing:
        raise BadResultsError(f"{what} {path} lacks schema columns: {', '.join(missing)}")
    if df.empty:
        raise BadResultsError(f"{what} has a header but no rows: {path}")
    for col in NUMERIC:
        df[col] = _strict_numeric(df, col, what, path)
    df["higher_is_better"] = df["higher_is_better"].map(_as_bool)
    df["error"] = df["error"].fillna("")
    if FAST_DEV in df.columns:
        df[FAST_DEV] = df[FAST_DEV].map(_as_bool).fillna(False).astype(bool)
    return df


def is_fast_dev(df: pd.DataFrame) -> bool:
    """Whether any row comes from a fast dev run (``--fast-dev-run``)."""
    return FAST_DEV in df.columns and bool(df[FAST_DEV].map(lambda v: _as_bool(v) is True).any())


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
