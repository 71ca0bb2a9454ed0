"""Route each segment to its own model, as the manifest of the train stage says.

The manifest (``<paths.segment_models>/manifest.json``) names, for every segment, the
family of its model: ``global`` (the global model file), ``sklearn`` (a skops file of its
own, checked against its sha256 before loading), or a statistical family whose
specification is refitted on the segment's series up to ``fit_end`` (see
:mod:`panelcast.modelling.statistical`). :meth:`Router.predict` forecasts rows of the
feature table the way each segment's model forecasts: the statistical ones read the
target of the periods before each row, so the frame must hold the segment's history.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import DataError, ModelFileError
from ..core.io import read_json
from ..core.periods import SEGMENT_FEATURE, TARGET, T
from .many import GLOBAL, SKLEARN, period_grid
from .statistical import (
    STAT_FAMILIES,
    FittedStat,
    blend,
    is_statistical,
    uses_global,
)

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def read_verified(file: Path, expected: Any, what: str, restore: str) -> bytes:
    """The bytes of ``file`` (``what`` it holds), refused unless their sha256 is
    ``expected``; ``restore`` says how to get the right file back."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ModelFileError(
            f"{file}: cannot read {what} ({exc.strerror or exc}); {restore}."
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise ModelFileError(
            f"{file}: sha256 {digest[:16]}... does not match the manifest's "
            f"{str(expected)[:16]}... for {what}: the file was replaced or edited; {restore}."
        )
    return data


class Router:
    """The models of every segment behind one ``predict``."""

    def __init__(
        self,
        manifest: dict,
        global_model: Any,
        own_models: dict[str, Any],
        season_length: int,
        segment_column: str,
    ):
        self.manifest = manifest
        self.global_model = global_model
        self.own_models = own_models
        self.season_length = season_length
        self.segment_column = segment_column
        self.entries = {str(e["segment"]): e for e in manifest["models"]}

    @property
    def strategy(self) -> str:
        return str(self.manifest.get("strategy", GLOBAL))

    def family(self, segment: str) -> str:
        """The family serving ``segment`` (``global`` for a segment the manifest lacks)."""
        entry = self.entries.get(str(segment))
        return GLOBAL if entry is None else str(entry["family"])

    def families(self, segments: pd.Series) -> np.ndarray:
        """The family of each value of ``segments``."""
        mapping = {s: e["family"] for s, e in self.entries.items()}
        return segments.astype(str).map(mapping).fillna(GLOBAL).to_numpy(dtype=object)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        global_model: Any,
        season_length: int,
        segment_column: str,
        read: Callable[[bytes, str], Any] | None = None,
        global_sha256: str | None = None,
    ) -> Router:
        """Read the manifest of ``directory`` and the per-segment model files it names,
        each checked against its recorded sha256 before it is loaded with skops;
        ``global_sha256`` (the global model's, from its metadata) must be the one the
        manifest's ``global`` entries record."""
        from .model import loads_model

        read = read or loads_model
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.exists():
            raise ModelFileError(
                f"{path}: no manifest of the segment models; rerun `dvc repro train` "
                f"(or `dvc checkout {directory}`)."
            )
        manifest = read_json(path)
        own: dict[str, Any] = {}
        stale = [
            e["segment"]
            for e in manifest.get("models", [])
            if e.get("family") == GLOBAL and global_sha256 and e.get("sha256") != global_sha256
        ]
        if stale:
            raise ModelFileError(
                f"{path}: the global model it routes {len(stale)} segment(s) to (e.g. "
                f"{stale[:3]}) is not the model file present (sha256 differs): the two come "
                f"from different runs; rerun `dvc repro train` or `dvc checkout`."
            )
        for entry in manifest.get("models", []):
            if entry.get("family") != SKLEARN:
                continue
            file = directory / str(entry["file"])
            data = read_verified(
                file,
                entry.get("sha256"),
                f"the model of segment {entry['segment']!r}",
                f"restore it with `dvc checkout {directory}` or rerun `dvc repro train`",
            )
            own[str(entry["segment"])] = read(data, str(file))
        return cls(manifest, global_model, own, season_length, segment_column)

    def predict(
        self,
        frame: pd.DataFrame,
        columns: list[str],
        rows: np.ndarray | None = None,
        fit_end: int | None = None,
    ) -> np.ndarray:
        """Forecasts of ``frame``'s rows (those of the boolean mask ``rows``, default all).

        ``columns`` are the global model's features. The statistical models are refitted
        on each segment's labelled periods up to ``fit_end`` (a period index; required
        when the manifest routes a segment to one) and forecast every later row one step
        ahead from the periods before it.
        """
        rows = np.ones(len(frame), dtype=bool) if rows is None else np.asarray(rows, bool)
        out = np.full(len(frame), np.nan)
        fam = self.families(frame[self.segment_column])
        with_global = np.fromiter((uses_global(f) for f in fam), dtype=bool, count=len(fam))
        use_global = rows & with_global
        if use_global.any():
            out[use_global] = self.global_model.predict(frame.loc[use_global, columns])
        own_columns = [c for c in columns if c != SEGMENT_FEATURE]
        needed = rows & (fam != GLOBAL)
        if not needed.any():
            return out[rows]
        seg_values = frame[self.segment_column].astype(str).to_numpy()
        for segment in pd.unique(seg_values[needed]):
            family = self.family(segment)
            mine = seg_values == segment
            if family == SKLEARN:
                pick = mine & rows
                model = self.own_models[segment]
                names = list(getattr(model, "feature_names_in_", own_columns))
                out[pick] = model.predict(frame.loc[pick, names])
            elif is_statistical(family):
                stat = self._stat(segment, frame[mine], fit_end, np.full(mine.sum(), np.nan))
                out[mine] = blend(family, out[mine], stat)
            else:
                raise ModelFileError(
                    f"manifest: segment {segment!r} has the unknown family {family!r}; "
                    f"expected one of {[GLOBAL, SKLEARN, *STAT_FAMILIES]} or a combination "
                    f"of global and statistical ones such as 'global+theta'."
                )
        return out[rows]

    def _stat(
        self, segment: str, part: pd.DataFrame, fit_end: int | None, current: np.ndarray
    ) -> np.ndarray:
        if fit_end is None:
            raise ValueError("fit_end is required to forecast with a statistical model")
        order = np.argsort(part[T].to_numpy(), kind="stable")
        t = part[T].to_numpy()[order]
        y = part[TARGET].to_numpy(dtype=float)[order]
        labelled = ~np.isnan(y)
        if not labelled[t <= fit_end].any():
            raise DataError(
                f"segment {segment!r}: no labelled period up to the model's fit end; the "
                f"statistical model cannot be refitted."
            )
        first = int(np.argmax(labelled))
        entry = self.entries[segment]
        # one value per period from the first labelled one (a period without a row: a gap)
        grid_t, grid_y = period_grid(t[first:], y[first:])
        fit = grid_t <= fit_end
        model = FittedStat(entry["family"], entry["candidate"], grid_y[fit], self.season_length)
        pred, _ = model.one_step(grid_y)
        result = current.copy()
        placed = np.full(len(t), np.nan)
        placed[first:] = pred[t[first:] - grid_t[0]]
        result[order] = placed
        return result


def write_model_dir(directory: str | Path, manifest: dict, files: dict[str, bytes]) -> None:
    """Write the segment models' directory: every model file, then the manifest; files
    left from an earlier run that the manifest does not name are removed."""
    from ..core.io import write_bytes, write_json

    directory = Path(directory)
    keep = {directory / MANIFEST, *(directory / name for name in files)}
    if directory.is_dir():
        for old in sorted(directory.rglob("*.skops")):
            if old not in keep:
                old.unlink()
    for name, data in sorted(files.items()):
        write_bytes(directory / name, data)
    write_json(directory / MANIFEST, manifest)


def route_summary(router: Router) -> dict:
    """Counts of segments per family, for metrics and logs."""
    fam = pd.Series([e["family"] for e in router.manifest["models"]], dtype=object)
    return {str(k): int(v) for k, v in sorted(fam.value_counts().items())}
