"""The deployed segment models, for the service: read once, checked, refit in memory.

The predict stage writes them into ``paths.deployed_segments`` (see
:mod:`panelcast.pipeline.predict`): a manifest whose sha256 the deployed metadata records
(``segment_models.manifest_sha256``), a skops file per scikit-learn segment and
``series.parquet`` for the statistical ones, each checked against the sha256 the manifest
records before it is read. A scikit-learn model is loaded with skops' trusted types only;
a statistical model is never stored as an object: its fixed specification is refit here
on the stored series up to its ``fit_end``, the same fit the predict stage made.

A deployment without ``segment_models`` in its metadata (written before segment models
existed) routes every segment to the global model.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.config import Params
from ..core.errors import ModelFileError
from ..core.periods import TARGET, T
from ..modelling.many import GLOBAL, SKLEARN
from ..modelling.model import loads_model
from ..modelling.routing import MANIFEST, read_verified
from ..modelling.statistical import STAT_FAMILIES, is_statistical
from ..pipeline.predict import SegmentDeployment, fit_stat, series_grids

logger = logging.getLogger("panelcast.serving")


def manifest_path(params: Params) -> Path:
    """The deployed segment models' manifest."""
    return Path(params.paths.deployed_segments) / MANIFEST


def load_segment_models(params: Params, metadata: dict) -> SegmentDeployment | None:
    """The deployed segment models the metadata names, checked and ready to forecast;
    ``None`` for a deployment that predates them (every segment global)."""
    info = metadata.get("segment_models")
    if info is None:
        return None
    directory = Path(params.paths.deployed_segments)
    source = str(params.paths.deployed_metadata)
    path = directory / MANIFEST
    data = _read(path, "the deployed segment models' manifest", directory)
    digest = hashlib.sha256(data).hexdigest()
    recorded = info.get("manifest_sha256") if isinstance(info, dict) else None
    if digest != recorded:
        raise ModelFileError(
            f"{path}: sha256 {digest[:16]}... does not match the 'manifest_sha256' "
            f"{str(recorded)[:16]}... that {source} records: the manifest and the deployed "
            f"model come from different runs, or the manifest was edited; restore both "
            f"with `dvc checkout` or rerun `dvc repro predict`."
        )
    try:
        manifest = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc}).") from None
    entries = manifest.get("models", [])
    families = [GLOBAL, SKLEARN, *STAT_FAMILIES]
    unknown = sorted(
        {str(e.get("family")) for e in entries}
        - set(families)
        - {str(e.get("family")) for e in entries if is_statistical(str(e.get("family")))}
    )
    if unknown:
        raise ModelFileError(
            f"{path}: unknown model famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
            f"expected one of {families} or a combination such as 'global+theta' "
            f"(written by a newer version?)."
        )
    stale = [
        e["segment"]
        for e in entries
        if e["family"] == GLOBAL and e.get("sha256") != metadata.get("sha256")
    ]
    if stale:
        raise ModelFileError(
            f"{path}: the global model it routes {len(stale)} segment(s) to (e.g. "
            f"{stale[:3]}) is not the deployed model of {source} (sha256 differs): the two "
            f"come from different runs; restore both with `dvc checkout` or rerun "
            f"`dvc repro predict`."
        )
    sklearn: dict[str, Any] = {}
    for entry in entries:
        if entry["family"] != SKLEARN:
            continue
        name = str(entry["segment"])
        file = _inside(directory, entry.get("file"), path, name)
        blob = read_verified(
            file, entry.get("sha256"), f"the model of segment {name!r}", _RESTORE.format(directory)
        )
        sklearn[name] = loads_model(blob, str(file))
    stat_entries = {str(e["segment"]): e for e in entries if is_statistical(e["family"])}
    stat = {}
    if stat_entries:
        series = _series(directory, manifest, path, params.problem.segment_column)
        grids = series_grids(series, params.problem.segment_column)
        lacking = sorted(set(stat_entries) - set(grids))
        if lacking:
            raise ModelFileError(
                f"{directory / manifest['series']['file']}: no series for the statistical "
                f"segment(s) {lacking[:5]}; expected one per statistical entry of {path}."
            )
        refitted = cycle_refits(params, metadata)
        for name, grid in series_grids(refitted, params.problem.segment_column).items():
            if name in stat_entries:  # refitted alone by the production cycle
                grids[name] = grid
        season_length = params.problem.calendar.season_length
        stat = {
            name: fit_stat(entry, *grids[name], season_length)
            for name, entry in stat_entries.items()
        }
    if sklearn or stat:
        logger.info(
            "segment models (%s): %s",
            manifest.get("strategy", GLOBAL),
            ", ".join(f"{k} {v}" for k, v in manifest.get("families", {}).items()),
        )
    return SegmentDeployment(manifest, {}, sklearn, stat)


#: The production cycle's per-segment refits: each refitted segment's series up to its
#: refit period, for the deployed model version it applies to (``cycle.state_dir``).
CYCLE_SERIES = "segment_series.parquet"


def cycle_refits(params: Params, metadata: dict) -> pd.DataFrame:
    """The series the production cycle refitted segments on, for the deployed version
    (segment, ``t``, ``target``; empty when there are none). A statistical segment
    model refitted alone is its deployed specification fitted on its series up to the
    period the cycle refitted it at; newer values are filtered through it as usual."""
    seg = params.problem.segment_column
    empty = pd.DataFrame(
        {seg: pd.Series(dtype=str), T: pd.Series(dtype="int64"), TARGET: pd.Series(dtype="float64")}
    )
    path = Path(params.cycle.state_dir) / CYCLE_SERIES
    if not path.is_file():
        return empty
    frame = pd.read_parquet(path)
    frame = frame[frame["model_version"] == metadata.get("version")]
    if frame.empty:
        return empty
    logger.info(
        "%d segment model(s) refitted alone by the production cycle (%s)",
        frame[seg].nunique(),
        path,
    )
    return frame[[seg, T, TARGET]].reset_index(drop=True)


#: How to get a deployed file back (formatted with the directory).
_RESTORE = "restore it with `dvc checkout {}` or rerun `dvc repro predict`"


def _read(path: Path, what: str, directory: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelFileError(
            f"{path}: cannot read {what} ({exc.strerror or exc}); restore it with "
            f"`dvc checkout {directory}` or rerun `dvc repro predict`."
        ) from None


def _inside(directory: Path, name: Any, manifest: Path, segment: str) -> Path:
    """``directory / name``, refused unless it stays inside ``directory``."""
    if not isinstance(name, str) or not name:
        raise ModelFileError(
            f"{manifest}: segment {segment!r} has no model file; expected a path relative "
            f"to {directory}, found {name!r}."
        )
    file = directory / name
    root = directory.resolve()
    if root not in file.resolve().parents:
        raise ModelFileError(
            f"{manifest}: the model file {name!r} of segment {segment!r} is outside "
            f"{directory}; expected a path inside it."
        )
    return file


def _series(directory: Path, manifest: dict, path: Path, segment: str) -> pd.DataFrame:
    """The statistical segments' series, checked against the manifest's sha256."""
    info = manifest.get("series") or {}
    file = _inside(directory, info.get("file"), path, "(series)")
    data = read_verified(
        file, info.get("sha256"), "the statistical segments' series", _RESTORE.format(directory)
    )
    frame = pd.read_parquet(io.BytesIO(data))
    missing = [c for c in (segment, T, TARGET) if c not in frame.columns]
    if missing:
        raise ModelFileError(
            f"{file}: missing column(s) {missing}; expected {[segment, T, TARGET]}, found "
            f"{list(frame.columns)}."
        )
    return frame
