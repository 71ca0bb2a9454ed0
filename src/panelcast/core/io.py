"""Atomic, deterministic writers: a half-written file is never taken as valid."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import DataError


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp)`` on a temporary file beside ``path``, fsync it, then rename.

    A crash (even SIGKILL) leaves either the old file or no file, never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def dumps_json(obj: Any) -> str:
    """Stable JSON text: sorted keys are not used, so the caller's order is kept."""
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (NaN is refused: use None)."""
    text = dumps_json(obj)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: str | Path) -> Any:
    """Read a JSON file with an error that names it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found (did the previous stage run?)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}).") from None


def write_parquet(path: str | Path, frame: pd.DataFrame) -> Path:
    """Write Parquet atomically; same frame gives byte-identical files."""
    return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False, compression="zstd"))


def write_csv(path: str | Path, frame: pd.DataFrame) -> Path:
    """Write CSV atomically (for DVC plots)."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"))


def clean_float(value: float | None, digits: int = 6) -> float | None:
    """Round for stable JSON; NaN and inf become None."""
    if value is None:
        return None
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return float(f"{value:.{digits}g}")
