"""Collect: read the source named in params, keep its provenance, write an immutable snapshot.

Accepted sources:

* ``package://DIST/PATH``: a data file shipped inside an installed distribution, found
  through :mod:`importlib.metadata` (no import of the package, no download);
* a local path (relative to the repository root) or a ``file://`` URL: regular files only
  (a named pipe, a device such as ``/dev/zero``, a socket or a directory is refused before
  it is opened, since reading it could block or never end);
* an ``http(s)://`` URL, read with :mod:`urllib.request` under explicit time limits;
* any other fsspec URL (``s3://`` ...), read in chunks under the same size limit.

Nothing is held in memory whole: a remote source is downloaded to a temporary file in
chunks (hashed on the way), a ``.gz`` source is decompressed to a temporary file in chunks,
and the CSV checks read the file in chunks (the first line, the tail, an incremental UTF-8
decoder). The CSV is parsed by :mod:`pyarrow.csv` in two streaming passes: the first infers
each column's type from every row (as pandas does: integers, else floats, else booleans,
else text; integers with missing values become floats; dates stay text), the second reads
the typed table. Limits (``source.timeout_s``, ``source.max_seconds``,
``source.max_bytes``) bound every transfer; errors are one line naming the source.
"""

from __future__ import annotations

import codecs
import csv
import errno
import functools
import gzip
import hashlib
import http.client
import importlib.metadata
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from ..core.errors import DataError

logger = logging.getLogger(__name__)

#: Bytes read, hashed, decoded or written at a time.
CHUNK = 1 << 20
#: Defaults of ``source.timeout_s``, ``source.max_seconds`` and ``source.max_bytes``.
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_SECONDS = 600.0
DEFAULT_MAX_BYTES = 4 * 2**30
#: The header line may not be longer than this (a file without newlines is not a table).
MAX_HEADER_BYTES = 1 << 20
#: Bytes read from the end of a CSV to find its last line.
TAIL_BYTES = 1 << 20
#: pandas' default missing-value markers (``pandas.read_csv``'s ``na_values``).
NA_VALUES = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
    "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip
TRUE_VALUES = ("True", "TRUE", "true")
FALSE_VALUES = ("False", "FALSE", "false")
#: First bytes of formats that are not CSV text: (magic, what it is).
MAGIC = (
    (b"\x1f\x8b", "gzip-compressed"),
    (b"PAR1", "a Parquet file"),
    (b"PK\x03\x04", "a zip archive"),
    (b"BZh", "bzip2-compressed"),
    (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
)
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
#: pyarrow's message for a value that does not fit the column's type.
_CONVERSION = re.compile(
    r"In CSV column #(?P<column>\d+): CSV conversion error to \w+: invalid value '(?P<value>.*)'$",
    re.S,
)
#: Block of text pyarrow parses at a time (the type guess reads the first one).
BLOCK_BYTES = 4 << 20
#: Columns widened (a full read restarted) before every block is inspected first.
MAX_WIDENINGS = 3


class SourceError(DataError):
    """The source cannot be read into a table."""


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """Bounds of one read of a source (``source.timeout_s``, ``max_seconds``, ``max_bytes``)."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    max_seconds: float = DEFAULT_MAX_SECONDS
    max_bytes: int = DEFAULT_MAX_BYTES


class Budget:
    """Bytes and seconds left for one source; refuses, naming the source and the param."""

    def __init__(self, uri: str, limits: Limits) -> None:
        self.uri = uri
        self.limits = limits
        self.started = time.monotonic()

    @property
    def remaining(self) -> float:
        """Seconds left before ``source.max_seconds``."""
        return self.limits.max_seconds - (time.monotonic() - self.started)

    def check_time(self, done: int = 0) -> None:
        if self.remaining <= 0:
            raise self.timed_out(done)

    def check_size(self, size: int, what: str = "") -> None:
        if size > self.limits.max_bytes:
            raise self.too_large(what or f"{size} bytes")

    def timed_out(self, done: int) -> SourceError:
        return SourceError(
            f"source {self.uri!r}: the transfer timed out after {self.limits.max_seconds:g} s "
            f"(source.max_seconds) with {done} bytes read; raise source.max_seconds or use a "
            f"faster source."
        )

    def idle(self) -> SourceError:
        return SourceError(
            f"source {self.uri!r}: the server did not answer: timed out after "
            f"{self.limits.timeout_s:g} s (source.timeout_s) waiting for data."
        )

    def too_large(self, found: str) -> SourceError:
        return SourceError(
            f"source {self.uri!r}: larger than the limit of {self.limits.max_bytes} bytes "
            f"(source.max_bytes): {found}; raise source.max_bytes if the file is right."
        )


# --------------------------------------------------------------------------- the raw source


@dataclass(frozen=True, eq=False)
class RawSource:
    """A source as read: its bytes in a local file, their hash, and where they came from.

    ``path`` holds the bytes as received (the local file itself, or a downloaded copy);
    ``table_path`` the table to parse (a decompressed copy for ``.gz``). Temporary copies
    live in ``workdir`` and are removed by :meth:`close` (or when the object is collected).
    """

    uri: str
    location: str
    path: Path
    format: str
    sha256: str
    size: int
    package_version: str | None = None
    compression: str | None = None
    table_path: Path | None = None
    workdir: Path | None = None
    local_stat: tuple[int, ...] | None = None  # the stat of a local file when it was hashed
    headers: dict[str, str] = field(default_factory=dict)  # validators of an http response

    def __post_init__(self) -> None:
        if self.workdir is not None:
            cleanup = weakref.finalize(self, shutil.rmtree, str(self.workdir), True)
            object.__setattr__(self, "_cleanup", cleanup)

    @property
    def data(self) -> bytes:
        """The source bytes as received, read whole (small files and tests only)."""
        return self.path.read_bytes()

    @property
    def table_file(self) -> Path:
        """The file the table is parsed from."""
        return self.table_path or self.path

    @property
    def where(self) -> str:
        """How messages name the source."""
        return f"source {self.uri!r} ({self.location})"

    def close(self) -> None:
        """Remove the temporary copies (a local source file is never touched)."""
        cleanup = getattr(self, "_cleanup", None)
        if cleanup is not None:
            cleanup()

    def __enter__(self) -> RawSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve_package_file(uri: str) -> tuple[Path, str]:
    """Locate ``package://DIST/PATH`` inside an installed distribution."""
    spec = uri.removeprefix("package://")
    dist_name, _, rel = spec.partition("/")
    if not dist_name or not rel:
        raise SourceError(
            f"source uri {uri!r} must look like 'package://DIST/PATH/IN/WHEEL', e.g. "
            f"'package://plotnine/data/txhousing.csv'."
        )
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise SourceError(
            f"source uri {uri!r}: distribution {dist_name!r} is not installed "
            f"(install the project's lock file)."
        ) from None
    files = {str(f): f for f in (dist.files or [])}
    if rel not in files and f"{dist_name}/{rel}" in files:
        rel = f"{dist_name}/{rel}"  # package://plotnine/data/x.csv -> plotnine/data/x.csv
    if rel not in files:
        near = sorted(k for k in files if k.endswith(Path(rel).suffix))[:5]
        raise SourceError(
            f"source uri {uri!r}: {rel!r} is not a file of {dist_name} {dist.version}; "
            f"files with the same suffix include {near}."
        )
    return Path(str(dist.locate_file(files[rel]))), dist.version


def source_kind(uri: str) -> str:
    """``package``, ``local`` (a path or ``file://``), ``http`` or ``fsspec``."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme == "package":
        return "package"
    if scheme in ("", "file"):
        return "local"
    if scheme in ("http", "https"):
        return "http"
    return "fsspec"


def local_path(uri: str) -> Path:
    """The file a local source names (a path, or a ``file://`` URL)."""
    if uri.lower().startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(uri).path))
    return Path(uri)


#: What DVC watches for a ``package://`` source: the hash-pinned lock file pins the
#: distribution, hence the file inside it.
PACKAGE_WATCH = "requirements.lock"


def watch_target(uri: str) -> str:
    """What ``source.watch`` must be for ``uri``: the dependency through which DVC notices
    new data (dvc.yaml lists it among collect's deps).

    A local file is watched itself (DVC hashes its content); an http(s) or object-store
    URL too (DVC records its ETag in dvc.lock and compares it at every ``dvc repro``); a
    ``package://`` file through the lock file that pins its distribution.
    """
    kind = source_kind(uri)
    if kind == "package":
        return PACKAGE_WATCH
    if kind == "local":
        return str(local_path(uri))
    return uri


def source_format(uri: str, fmt: str = "auto") -> tuple[str, str | None]:
    """The table format (``csv`` or ``parquet``) and the compression (``gzip`` or None)."""
    name = uri.lower().split("?")[0]
    compression = "gzip" if name.endswith(".gz") else None
    if fmt != "auto":
        return fmt, compression
    if name.endswith((".parquet", ".pq")):
        return "parquet", compression
    if name.endswith((".csv", ".csv.gz", ".txt", ".txt.gz")):
        return "csv", compression
    raise SourceError(
        f"source {uri!r}: cannot tell the format from the name; expected a name ending in "
        f".csv, .csv.gz or .parquet, or set source.format."
    )


def read_source(
    uri: str,
    fmt: str = "auto",
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    tmp_dir: str | Path | None = None,
) -> RawSource:
    """Read a source into a local file within the limits; errors name the source.

    A local file is read in place (hashed in chunks); a remote one is downloaded to a
    temporary folder under ``tmp_dir`` (the system's by default); a ``.gz`` one is
    decompressed there. Use the result as a context manager to remove the copies.
    """
    fmt, compression = source_format(uri, fmt)
    budget = Budget(uri, Limits(timeout_s, max_seconds, max_bytes))
    kind = source_kind(uri)
    version = None
    workdir: Path | None = None
    local_stat = None
    headers: dict[str, str] = {}
    try:
        if kind in ("package", "local"):
            if kind == "package":
                path, version = resolve_package_file(uri)
            else:
                path = local_path(uri)
            location = str(path)
            sha, size, local_stat = hash_local_file(path, budget)
        else:
            location = uri
            workdir = _workdir(tmp_dir)
            path = workdir / "download"
            if kind == "http":
                sha, size, headers = _download_http(uri, path, budget)
            else:
                sha, size = _download_fsspec(uri, path, budget)
        table_path = None
        head = _head_bytes(path, budget)
        if compression == "gzip":
            if size and not head.startswith(b"\x1f\x8b"):
                raise SourceError(
                    f"source {uri!r} ({location}): the name ends in .gz but the file is not "
                    f"gzip-compressed (it starts with {head[:4]!r}); remove the .gz suffix."
                )
            workdir = workdir or _workdir(tmp_dir)
            table_path = workdir / "table"
            _gunzip(path, table_path, budget, f"source {uri!r} ({location})")
            if local_stat is not None:
                _check_unchanged(path, local_stat, f"source {uri!r} ({location})")
        elif fmt == "csv":
            _refuse_binary(head, uri, location)
    except BaseException:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    return RawSource(
        uri=uri,
        location=location,
        path=path,
        format=fmt,
        sha256=sha,
        size=size,
        package_version=version,
        compression=compression,
        table_path=table_path,
        workdir=workdir,
        local_stat=local_stat,
        headers=headers,
    )


def _workdir(tmp_dir: str | Path | None) -> Path:
    if tmp_dir is not None:
        Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="panelcast-download-", dir=tmp_dir))


def _head_bytes(path: Path, budget: Budget, n: int = 8) -> bytes:
    handle, _ = open_regular(path, budget.uri, budget)
    with handle:
        return handle.read(n)


def _refuse_binary(head: bytes, uri: str, location: str) -> None:
    """A compressed or Parquet file read as CSV gets its own message, not "not UTF-8"."""
    for magic, what in MAGIC:
        if head.startswith(magic):
            if magic == b"\x1f\x8b":
                hint = "name it with the suffix .gz (e.g. 'table.csv.gz') to read it compressed"
            elif magic == b"PAR1":
                hint = "name it .parquet or set source.format: parquet"
            else:
                hint = "decompress it first (only .csv.gz is read compressed)"
            raise SourceError(
                f"source {uri!r} ({location}): the file is {what} (it starts with bytes "
                f"{head[: len(magic)].hex(' ')}), not CSV text; {hint}."
            )


# --------------------------------------------------------------------------- local files


def stat_key(st: os.stat_result) -> tuple[int, ...]:
    """What identifies a version of a file on this machine (size, times, inode)."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def regular_file_stat(path: Path, uri: str) -> os.stat_result:
    """``os.stat`` of a source file, refusing anything but a regular file (before opening it:
    opening a named pipe blocks until a writer comes)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise SourceError(f"source {uri!r}: file {str(path)!r} not found.") from None
    except OSError as exc:
        raise _unreadable(exc, path, uri) from None
    _refuse_irregular(st, path, uri)
    return st


def _unreadable(exc: OSError, path: Path, uri: str) -> SourceError:
    code = errno.errorcode.get(exc.errno or 0, "?")
    return SourceError(f"source {uri!r}: {str(path)!r} cannot be read: {exc.strerror} ({code}).")


def _refuse_irregular(st: os.stat_result, path: Path, uri: str) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    what = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "not a regular file")
    if what == "a directory":
        raise SourceError(f"source {uri!r}: {str(path)!r} is a directory, not a file.")
    raise SourceError(
        f"source {uri!r}: {str(path)!r} is {what}, not a regular file; collect reads "
        f"regular files only (a pipe or a device may block or never end)."
    )


def open_regular(path: Path, uri: str, budget: Budget) -> tuple[BinaryIO, os.stat_result]:
    """Open a regular file for reading, checked before and after opening (no blocking open)."""
    st = regular_file_stat(path, uri)
    budget.check_size(st.st_size, f"the file has {st.st_size} bytes")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceError(f"source {uri!r}: file {str(path)!r} not found.") from None
    except OSError as exc:
        raise _unreadable(exc, path, uri) from None
    handle = open(fd, "rb", closefd=True)  # noqa: SIM115 - returned to the caller
    st = os.fstat(fd)  # replaced between the stat and the open: check again
    try:
        _refuse_irregular(st, path, uri)
    except SourceError:
        handle.close()
        raise
    return handle, st


def hash_local_file(path: Path, budget: Budget) -> tuple[str, int, tuple[int, ...]]:
    """sha256 and size of a local regular file, read in chunks within the limits."""
    handle, st = open_regular(path, budget.uri, budget)
    digest, size = hashlib.sha256(), 0
    with handle:
        while chunk := handle.read(CHUNK):
            size += len(chunk)
            budget.check_size(size, f"more than {budget.limits.max_bytes} bytes read")
            budget.check_time(size)
            digest.update(chunk)
    return digest.hexdigest(), size, stat_key(st)


def _check_unchanged(path: Path, before: tuple[int, ...], where: str) -> None:
    try:
        now = stat_key(os.stat(path))
    except OSError:
        now = ()
    if now != before:
        raise SourceError(
            f"{where}: the file changed while it was being read (size, time or inode "
            f"differ); run again once it is complete."
        )


def _gunzip(src: Path, dest: Path, budget: Budget, where: str) -> int:
    """Decompress ``src`` into ``dest`` in chunks; the decompressed size is limited too."""
    size = 0
    raw, _ = open_regular(src, budget.uri, budget)
    with raw, gzip.GzipFile(fileobj=raw) as unzipped, open(dest, "wb") as out:
        while True:
            try:
                chunk = unzipped.read(CHUNK)
            except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
                raise SourceError(
                    f"{where}: not a valid gzip file: {type(exc).__name__}: {exc}."
                ) from None
            if not chunk:
                return size
            size += len(chunk)
            limit = budget.limits.max_bytes
            budget.check_size(size, f"once decompressed (gzip) it has more than {limit} bytes")
            budget.check_time(size)
            out.write(chunk)


# --------------------------------------------------------------------------- http(s)


class _Watchdog:
    """Shuts down the sockets of one transfer when its time is up, so no read blocks on."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True

    def add(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Watched:
    """Connection mixin: hand the connected socket to the watchdog."""

    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._watchdog.add(self.sock)  # type: ignore[attr-defined]


class _WatchedHTTPConnection(_Watched, http.client.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        conn = functools.partial(_WatchedHTTPConnection, watchdog=self._watchdog)
        return self.do_open(conn, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        conn = functools.partial(_WatchedHTTPSConnection, watchdog=self._watchdog)
        return self.do_open(conn, req, context=self._context)


def http_request(
    uri: str, budget: Budget, consume: Callable[[bytes], None] | None, method: str = "GET"
) -> dict[str, str]:
    """Send one request within the limits, pass the body to ``consume`` chunk by chunk.

    ``source.timeout_s`` bounds the connection and every wait for data (a server that
    never answers), ``source.max_seconds`` the whole exchange (a server that drips bytes),
    ``source.max_bytes`` the body (announced or received). Returns the response headers.
    """
    request = urllib.request.Request(
        uri, method=method, headers={"User-Agent": "panelcast", "Accept-Encoding": "identity"}
    )
    watchdog = _Watchdog(budget.remaining)
    opener = urllib.request.build_opener(_HTTPHandler(watchdog), _HTTPSHandler(watchdog))
    done = 0
    try:
        with watchdog, opener.open(request, timeout=budget.limits.timeout_s) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            announced = _content_length(headers)
            if announced is not None and method != "HEAD":
                budget.check_size(announced, f"the server announces {announced} bytes")
            while consume is not None:
                chunk = response.read1(CHUNK)  # returns after one read of the socket
                if not chunk:
                    break
                done += len(chunk)
                budget.check_size(done, f"more than {budget.limits.max_bytes} bytes received")
                budget.check_time(done)
                consume(chunk)
        if watchdog.expired:
            raise budget.timed_out(done)
        if consume is not None and announced is not None and done < announced:
            raise SourceError(
                f"source {uri!r} cannot be reached: the connection closed after {done} of "
                f"the {announced} bytes announced."
            )
    except SourceError:
        raise
    except urllib.error.HTTPError as exc:
        raise SourceError(
            f"source {uri!r} cannot be reached: HTTP {exc.code} {exc.reason}."
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        if watchdog.expired:
            raise budget.timed_out(done) from None
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            raise budget.idle() from None
        raise SourceError(
            f"source {uri!r} cannot be reached: {type(reason).__name__}: {reason}"
        ) from None
    return headers


def _content_length(headers: dict[str, str]) -> int | None:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None


def _download_http(uri: str, dest: Path, budget: Budget) -> tuple[str, int, dict[str, str]]:
    digest = hashlib.sha256()
    with open(dest, "wb") as out:

        def consume(chunk: bytes) -> None:
            digest.update(chunk)
            out.write(chunk)

        headers = http_request(uri, budget, consume)
        size = out.tell()
    return digest.hexdigest(), size, headers


# --------------------------------------------------------------------------- other fsspec URLs


def _download_fsspec(uri: str, dest: Path, budget: Budget) -> tuple[str, int]:
    """Copy an fsspec URL in chunks (its backend's own timeouts apply to each read)."""
    import fsspec

    digest, size = hashlib.sha256(), 0
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        try:
            announced = int(fs.size(path))
        except Exception:  # noqa: BLE001 - the size is a courtesy check, reading follows
            announced = None
        if announced is not None:
            budget.check_size(announced, f"the store reports {announced} bytes")
        with fs.open(path, "rb") as handle, open(dest, "wb") as out:
            while chunk := handle.read(CHUNK):
                size += len(chunk)
                budget.check_size(size, f"more than {budget.limits.max_bytes} bytes read")
                budget.check_time(size)
                digest.update(chunk)
                out.write(chunk)
    except SourceError:
        raise
    except Exception as exc:  # fsspec raises many backend-specific types
        raise SourceError(
            f"source {uri!r} cannot be reached: {type(exc).__name__}: {exc}"
        ) from None
    return digest.hexdigest(), size


# --------------------------------------------------------------------------- parsing


def parse_table(raw: RawSource, require_final_newline: bool = True) -> pd.DataFrame:
    """Parse the source into a DataFrame, refusing empty, truncated or mis-delimited files."""
    path = raw.table_file
    local = raw.local_stat is not None and raw.table_path is None  # the user's file itself
    if local:  # not replaced since it was hashed (by a pipe, say: opening that would block)
        _check_unchanged(path, raw.local_stat, raw.where)
    if path.stat().st_size == 0:
        raise SourceError(f"{raw.where}: the file is empty (0 bytes).")
    if raw.format == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise SourceError(
                f"{raw.where}: not a readable Parquet file: {type(exc).__name__}: {exc}"
            ) from None
    else:
        frame = _parse_csv(raw, path, require_final_newline)
    if local:
        _check_unchanged(path, raw.local_stat, raw.where)
    if len(frame) == 0:
        raise SourceError(
            f"{raw.where}: the table has a header ({list(frame.columns)[:10]}) but no rows."
        )
    return frame


def scan_utf8(path: Path, where: str) -> int:
    """Check the whole file is UTF-8, chunk by chunk; returns the number of ``\\n``."""
    newlines, offset, pending = 0, 0, b""
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(CHUNK)
            data = pending + chunk
            final = not chunk
            try:
                _, used = codecs.utf_8_decode(data, "strict", final)
            except UnicodeDecodeError as exc:
                at = offset + exc.start
                snippet = data[max(exc.start - 20, 0) : exc.end + 20]
                raise SourceError(
                    f"{where}: not UTF-8 text: byte {data[exc.start]:#x} at offset {at} "
                    f"(near {snippet!r}); re-encode the file as UTF-8."
                ) from None
            newlines += chunk.count(b"\n")
            pending = data[used:]
            offset += used
            if final:
                return newlines


def _first_line(path: Path, where: str) -> str:
    with open(path, "rb") as handle:
        head = handle.read(MAX_HEADER_BYTES)
    end = min((i for i in (head.find(b"\n"), head.find(b"\r")) if i >= 0), default=-1)
    if end < 0:
        if len(head) >= MAX_HEADER_BYTES:
            raise SourceError(
                f"{where}: the first line (header) is longer than {MAX_HEADER_BYTES} bytes: "
                f"not a CSV table."
            )
        end = len(head)
    return head[:end].decode("utf-8").removeprefix("\ufeff")


def _tail(path: Path, size: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(max(size - TAIL_BYTES, 0))
        return handle.read()


def column_names(header: str) -> list[str]:
    """The header's column names, as pandas names them (``Unnamed: i``, ``a.1`` for twins)."""
    out: list[str] = []
    used: set[str] = set()
    counts: dict[str, int] = {}
    for i, name in enumerate(next(csv.reader([header]))):
        name = name or f"Unnamed: {i}"
        if name in used:
            k = counts.get(name, 0)
            while f"{name}.{k + 1}" in used:
                k += 1
            counts[name] = k + 1
            name = f"{name}.{k + 1}"
        used.add(name)
        out.append(name)
    return out


def _parse_csv(raw: RawSource, path: Path, require_final_newline: bool) -> pd.DataFrame:
    where = raw.where
    newlines = scan_utf8(path, where)
    header = _first_line(path, where)
    if not header.strip():
        raise SourceError(f"{where}: the first line (header) is empty.")
    if "," not in header:
        for sep, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if sep in header:
                raise SourceError(
                    f"{where}: expected comma-separated values, found a {name}-separated "
                    f"header {header[:80]!r}."
                )
    names = column_names(header)
    size = path.stat().st_size
    tail = _tail(path, size)
    if not tail.endswith((b"\n", b"\r")) and newlines > 0:
        last = re.split(rb"\r\n|\r|\n", tail)[-1].decode("utf-8", "replace")
        n_lines = newlines + 1
        found = len(next(csv.reader([last]))) if last else 0
        if found != len(names):
            raise SourceError(
                f"{where}: the last line (line {n_lines}) is truncated: {found} fields where "
                f"the header has {len(names)}: {last[:80]!r}."
            )
        if require_final_newline:
            raise SourceError(
                f"{where}: does not end with a newline: the last line may be truncated: "
                f"{last[:80]!r}; if the file is complete, add the final newline or set "
                f"source.require_final_newline: false."
            )
    if newlines == 0 and not tail.endswith(b"\r"):  # the header alone: no rows
        return pd.DataFrame(columns=names)
    return read_csv_typed(path, names, where)


def _csv_options(names: list[str], types: dict[str, Any] | None, invalid: list) -> tuple:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    def on_invalid(row: Any) -> str:
        invalid.append(row)
        return "error"

    read = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=BLOCK_BYTES)
    parse = pacsv.ParseOptions(
        delimiter=",", newlines_in_values=True, ignore_empty_lines=True,
        invalid_row_handler=on_invalid,
    )  # fmt: skip
    convert = pacsv.ConvertOptions(
        column_types=types or {n: pa.string() for n in names},
        null_values=list(NA_VALUES),
        true_values=list(TRUE_VALUES),
        false_values=list(FALSE_VALUES),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        timestamp_parsers=[],
    )
    return read, parse, convert


class _Column:
    """The narrowest type a column's values fit so far, as pandas would choose it:
    ``null`` (no value yet), then ``int``, ``float``, ``bool`` or ``str``."""

    def __init__(self) -> None:
        self.kind = "null"

    def update(self, values: Any) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.kind == "str" or values.null_count == len(values):
            return
        values = values.drop_null()
        if self.kind in ("null", "int"):
            if _fits(values, pa.int64()):
                self.kind = "int"
                return
            if pc.all(pc.match_substring_regex(values, _INTEGER.pattern)).as_py():
                self.kind = "str"  # integers beyond int64: kept as text
                return
        if self.kind in ("null", "int", "float") and _fits(values, pa.float64()):
            self.kind = "float"
            return
        if self.kind in ("null", "bool"):
            allowed = pa.array([*TRUE_VALUES, *FALSE_VALUES])
            if pc.all(pc.is_in(values, value_set=allowed)).as_py():
                self.kind = "bool"
                return
        self.kind = "str"

    def widen(self, value: str) -> None:
        """A later value did not fit: the narrowest kind that holds it and the others."""
        try:
            float(value)
            number = _INTEGER.match(value) is None  # a huge integer is kept as text
        except ValueError:
            number = False
        self.kind = "float" if self.kind == "int" and number else "str"


def _fits(values: Any, arrow_type: Any) -> bool:
    """Whether every (non-null) text value converts to ``arrow_type``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.cast(values, arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _arrow_types(columns: dict[str, _Column]) -> dict[str, Any]:
    """Arrow types to read with: integers stay int64 (pyarrow makes the ones with missing
    values float64 in pandas, as pandas does), a column without values is float64."""
    import pyarrow as pa

    kinds = {"int": pa.int64(), "float": pa.float64(), "null": pa.float64(), "bool": pa.bool_()}
    return {name: kinds.get(col.kind, pa.string()) for name, col in columns.items()}


def _infer(path: Path, names: list[str], invalid: list, blocks: int | None) -> dict:
    """Each column's kind from the first ``blocks`` blocks of text (None: every block)."""
    import pyarrow.csv as pacsv

    columns = {name: _Column() for name in names}
    read, parse, convert = _csv_options(names, None, invalid)
    with pacsv.open_csv(path, read, parse, convert) as reader:
        for i, batch in enumerate(reader):
            for name, values in zip(names, batch.columns, strict=True):
                columns[name].update(values)
            if blocks is not None and i + 1 >= blocks:
                break
    return columns


def read_csv_typed(path: Path, names: list[str], where: str) -> pd.DataFrame:
    """Read a CSV with pandas' types (integers, floats, booleans, else text; dates stay text).

    The types are guessed from the first block of text, then the file is read typed (one
    pass); a later value that does not fit widens its column (int -> float -> text) and the
    read starts again. After a few such surprises, every block is inspected first (a
    streaming pass over the text) and the file read once more with the final types.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    invalid: list = []
    try:
        columns = _infer(path, names, invalid, blocks=1)
        for attempt in range(MAX_WIDENINGS + 1):
            if attempt == MAX_WIDENINGS:
                logger.info("%s: the column types change late in the file: inferring "
                            "them from every block", where)  # fmt: skip
                columns = _infer(path, names, invalid, blocks=None)
            read, parse, convert = _csv_options(names, _arrow_types(columns), invalid)
            try:
                table = pacsv.read_csv(path, read, parse, convert)
                break
            except pa.ArrowInvalid as exc:
                found = _CONVERSION.match(str(exc))
                if found is None or attempt == MAX_WIDENINGS:
                    raise
                column = columns[names[int(found["column"])]]
                column.widen(found["value"])
                logger.debug("%s: column %r widened to %s", where, found["column"], column.kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SourceError(f"{where}: malformed CSV: {_arrow_message(exc, invalid)}") from None
    frame = table.to_pandas(self_destruct=True, split_blocks=True)
    del table
    for name in frame.columns:
        if frame[name].dtype == object:  # booleans with missing values, text in pandas < 3:
            frame[name] = frame[name].where(frame[name].notna(), np.nan)  # NaN, not None
    return frame


def _arrow_message(exc: Exception, invalid: list) -> str:
    if invalid:
        row = invalid[0]
        return (
            f"a line has {row.actual_columns} fields where the header has "
            f"{row.expected_columns}: {row.text[:80]!r}."
        )
    return str(exc).splitlines()[0]


# --------------------------------------------------------------------------- provenance


def provenance(raw: RawSource, frame: pd.DataFrame, name: str, licence: str) -> dict:
    """The provenance record written next to the snapshot."""
    record: dict[str, Any] = {
        "uri": raw.uri,
        "location": Path(raw.location).name if raw.uri.startswith("package://") else raw.location,
        "format": raw.format,
        "name": name,
        "licence": licence,
        "package_version": raw.package_version,
        "sha256": raw.sha256,
        "bytes": raw.size,
    }
    if raw.compression:
        record["compression"] = raw.compression
        record["decompressed_bytes"] = raw.table_file.stat().st_size
    return {
        "source": record,
        "rows": int(len(frame)),
        "columns": int(frame.shape[1]),
        "column_names": [str(c) for c in frame.columns],
    }
