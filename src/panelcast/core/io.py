"""Atomic, deterministic writers: a half-written file is never taken as valid.

Inside :func:`stage_outputs` (the stage runner opens one around every stage), writes are
*staged*: each file is written and fsynced beside its target under a hidden temporary name,
and all of them are moved into place only when the stage succeeds. A stage that fails
after writing part of its outputs leaves none of them behind (except the reports written
with ``keep_on_failure=True``, such as the contract report of a refused snapshot), so the
documented recovery (``git checkout HEAD -- . && dvc checkout``) never meets a new,
unsaved output.

Two fault-injection hooks exist for the reliability tests (never set them otherwise):
``PANELCAST_FAIL_AFTER_WRITE=N`` raises :class:`InjectedFault` right after the N-th staged
write of a stage, and ``PANELCAST_PAUSE_IN_WRITE=N`` sleeps inside the N-th write (the
temporary file written, not yet fsynced nor renamed) so that a test can SIGKILL it there.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import DataError, StorageError

logger = logging.getLogger(__name__)

FAIL_AFTER_WRITE = "PANELCAST_FAIL_AFTER_WRITE"
PAUSE_IN_WRITE = "PANELCAST_PAUSE_IN_WRITE"
#: How long the pause hook sleeps: long enough for any test to kill the process.
PAUSE_SECONDS = 300.0


class InjectedFault(RuntimeError):
    """Raised by the ``PANELCAST_FAIL_AFTER_WRITE`` hook (reliability tests only)."""


@dataclass
class _Staged:
    """The writes of the running stage, waiting for its success."""

    files: list[tuple[Path, Path, bool]] = field(default_factory=list)  # tmp, target, keep
    count: int = 0


_STAGED: _Staged | None = None


def _hook(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _temporary(path: Path) -> Path:
    """A hidden temporary file beside ``path`` (same file system: the rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp_name)


def storage_error(exc: OSError, path: str | Path, action: str) -> StorageError:
    """One line for an operating-system error on ``path``: the file, the action, the cause."""
    name = errno.errorcode.get(exc.errno or 0)
    cause = exc.strerror or str(exc)
    if name is None and "No space left" in str(exc):  # pyarrow's OSError has no errno
        name, cause = "ENOSPC", "No space left on device"
    return StorageError(
        f"{path}: cannot {action}: {cause}"
        + (f" ({name})" if name else "")
        + (". Free some space and run again" if name in ("ENOSPC", "EDQUOT") else "")
    )


def _write_synced(tmp: Path, path: Path, writer: Callable[[Path], None], number: int) -> None:
    try:
        writer(tmp)
        if _hook(PAUSE_IN_WRITE) == number:
            logger.warning("fault injection: pausing inside the write of %s", tmp)
            time.sleep(PAUSE_SECONDS)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
    except OSError as exc:
        raise storage_error(exc, path, "write it") from None


def atomic_write(
    path: str | Path, writer: Callable[[Path], None], *, keep_on_failure: bool = False
) -> Path:
    """Call ``writer(tmp)`` on a temporary file beside ``path``, fsync it, then rename.

    A crash (even SIGKILL) leaves either the old file or no file, never a partial one.
    Inside :func:`stage_outputs` the rename waits for the stage's success (or failure, for
    a ``keep_on_failure`` report).
    """
    path = Path(path)
    staged = _STAGED
    number = 1 if staged is None else staged.count + 1
    try:
        tmp = _temporary(path)
    except OSError as exc:
        raise storage_error(exc, path, "create a file beside it") from None
    try:
        _write_synced(tmp, path, writer, number)
        if staged is None:
            os.replace(tmp, path)
            return path
        staged.files.append((tmp, path, keep_on_failure))
        staged.count = number
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if _hook(FAIL_AFTER_WRITE) == number:
        raise InjectedFault(f"fault injection: failing after write {number} ({path})")
    return path


def _remove_stale(path: Path) -> None:
    """Temporary files a killed earlier run left beside ``path``."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def stage_outputs() -> Iterator[None]:
    """Stage every write of the block; move them into place only if the block succeeds.

    On failure the staged files are deleted, except those written with
    ``keep_on_failure=True``. Stages run one at a time per repository (DVC's lock), so
    temporary files of a killed earlier run are removed here too.
    """
    global _STAGED
    if _STAGED is not None:
        raise RuntimeError("stage_outputs() blocks cannot be nested")
    staged = _STAGED = _Staged()
    ok = False
    try:
        yield
        ok = True
    finally:
        _STAGED = None
        for tmp, path, keep in staged.files:
            if ok or keep:
                os.replace(tmp, path)
            else:
                tmp.unlink(missing_ok=True)
        for _, path, _ in staged.files:
            _remove_stale(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def dumps_json(obj: Any) -> str:
    """Stable JSON text: sorted keys are not used, so the caller's order is kept."""
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any, *, keep_on_failure: bool = False) -> Path:
    """Write JSON atomically (NaN is refused: use None)."""
    text = dumps_json(obj)
    return atomic_write(
        path, lambda tmp: tmp.write_text(text, encoding="utf-8"), keep_on_failure=keep_on_failure
    )


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


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as Parquet bytes (zstd, no index): the same frame gives the same bytes."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    return buffer.getvalue()


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
