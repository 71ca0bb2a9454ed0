"""Collect: read the source named in params, keep its provenance, write an immutable snapshot.

Accepted sources:

* ``package://DIST/PATH``: a data file shipped inside an installed distribution, found
  through :mod:`importlib.metadata` (no import of the package, no download);
* a local path (relative to the repository root);
* an fsspec URL (``s3://``, ``https://``, ``file://`` ...).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.errors import DataError

logger = logging.getLogger(__name__)


class SourceError(DataError):
    """The source cannot be read into a table."""


@dataclass(frozen=True)
class RawSource:
    """Bytes of a source and where they came from."""

    uri: str
    location: str
    data: bytes
    format: str
    package_version: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


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


def read_source(uri: str, fmt: str = "auto") -> RawSource:
    """Read the raw bytes of a source; errors name the source."""
    version = None
    if uri.startswith("package://"):
        path, version = resolve_package_file(uri)
        location = str(path)
        data = _read_local(path, uri)
    elif "://" in uri:
        location = uri
        data = _read_fsspec(uri)
    else:
        location = str(Path(uri))
        data = _read_local(Path(uri), uri)
    if fmt == "auto":
        name = uri.lower().split("?")[0]
        if name.endswith((".parquet", ".pq")):
            fmt = "parquet"
        elif name.endswith((".csv", ".csv.gz", ".txt")):
            fmt = "csv"
        else:
            raise SourceError(
                f"source {uri!r}: cannot tell the format from the name; expected a name "
                f"ending in .csv or .parquet, or set source.format."
            )
    return RawSource(uri=uri, location=location, data=data, format=fmt, package_version=version)


def _read_local(path: Path, uri: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SourceError(f"source {uri!r}: file {str(path)!r} not found.") from None
    except IsADirectoryError:
        raise SourceError(f"source {uri!r}: {str(path)!r} is a directory, not a file.") from None


def _read_fsspec(uri: str) -> bytes:
    import fsspec

    try:
        with fsspec.open(uri, "rb") as handle:
            return handle.read()
    except Exception as exc:  # fsspec raises many backend-specific types
        raise SourceError(
            f"source {uri!r} cannot be reached: {type(exc).__name__}: {exc}"
        ) from None


def parse_table(raw: RawSource) -> pd.DataFrame:
    """Parse the raw bytes into a DataFrame, refusing empty, truncated or mis-delimited files."""
    if not raw.data:
        raise SourceError(f"source {raw.uri!r} ({raw.location}): the file is empty (0 bytes).")
    if raw.format == "parquet":
        try:
            frame = pd.read_parquet(io.BytesIO(raw.data))
        except Exception as exc:
            raise SourceError(
                f"source {raw.uri!r} ({raw.location}): not a readable Parquet file: "
                f"{type(exc).__name__}: {exc}"
            ) from None
    else:
        frame = _parse_csv(raw)
    if len(frame) == 0:
        raise SourceError(
            f"source {raw.uri!r} ({raw.location}): the table has a header "
            f"({list(frame.columns)[:10]}) but no rows."
        )
    return frame


def _parse_csv(raw: RawSource) -> pd.DataFrame:
    try:
        text = raw.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        snippet = raw.data[max(exc.start - 20, 0) : exc.end + 20]
        raise SourceError(
            f"source {raw.uri!r} ({raw.location}): not UTF-8 text: byte {exc.object[exc.start]:#x} "
            f"at offset {exc.start} (near {snippet!r}); re-encode the file as UTF-8."
        ) from None
    lines = text.splitlines()
    header = lines[0] if lines else ""
    if not header.strip():
        raise SourceError(f"source {raw.uri!r} ({raw.location}): the first line (header) is empty.")
    if "," not in header:
        for sep, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if sep in header:
                raise SourceError(
                    f"source {raw.uri!r} ({raw.location}): expected comma-separated values, "
                    f"found a {name}-separated header {header[:80]!r}."
                )
    n_fields = len(next(csv.reader([header])))
    if not text.endswith(("\n", "\r")) and len(lines) > 1:
        last = lines[-1]
        found = len(next(csv.reader([last]))) if last else 0
        if found != n_fields:
            raise SourceError(
                f"source {raw.uri!r} ({raw.location}): the last line (line {len(lines)}) is "
                f"truncated: {found} fields where the header has {n_fields}: {last[:80]!r}."
            )
    try:
        return pd.read_csv(io.StringIO(text), on_bad_lines="error")
    except pd.errors.ParserError as exc:
        raise SourceError(f"source {raw.uri!r} ({raw.location}): malformed CSV: {exc}") from None


def provenance(raw: RawSource, frame: pd.DataFrame, name: str, licence: str) -> dict:
    """The provenance record written next to the snapshot."""
    return {
        "source": {
            "uri": raw.uri,
            "location": Path(raw.location).name
            if raw.uri.startswith("package://")
            else raw.location,
            "format": raw.format,
            "name": name,
            "licence": licence,
            "package_version": raw.package_version,
            "sha256": raw.sha256,
            "bytes": len(raw.data),
        },
        "rows": int(len(frame)),
        "columns": int(frame.shape[1]),
        "column_names": [str(c) for c in frame.columns],
    }
