"""Loading a deployed model for the service: checked, warm, with its batch forecasts.

Kept apart from the web application so that ``panelcast serve`` loads the model before it
imports the web stack (skops resolves some objects by scanning every loaded module, so
a model loads faster in a process with fewer modules) and refuses a bad model sooner.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.config import Params
from ..modelling.many import SKLEARN
from ..pipeline.predict import SERIES_FILE
from .fastpath import FAMILY
from .forecaster import Forecaster, current_files
from .segments import manifest_path

logger = logging.getLogger("panelcast.serving")


def file_signature(params: Params) -> tuple:
    """What identifies the deployed files on disk now (mtime, size, inode of each): the
    model, its metadata, the serving state, the batch forecasts, and of the segment
    models the manifest, the series and the folders holding them (a file renamed into a
    folder changes its mtime: a few stats, however many segment models there are)."""
    p = params.paths
    out = []
    state_dir = Path(params.cycle.state_dir)
    watched = (
        p.deployed_model,
        p.deployed_metadata,
        p.serving_state,
        p.forecasts,
        state_dir / "state.json",
        state_dir / "serving_state.parquet",
        state_dir / "forecasts.parquet",
        state_dir / "segment_series.parquet",
    )
    segments = Path(p.deployed_segments)
    own = (manifest_path(params), segments / SERIES_FILE, segments, segments / SKLEARN)
    for path in (*watched, *own):
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


@dataclass
class Loaded:
    """One deployed model, ready to answer."""

    forecaster: Forecaster
    forecasts: dict[str, dict]
    signature: tuple
    compiled: bool
    seconds: float

    @property
    def version(self) -> str:
        return self.forecaster.version


def load_bundle(params: Params, allow_failed_gate: bool = False) -> Loaded:
    """Load and check the deployed model, warm it up, read its batch forecasts.

    Raises what :meth:`Forecaster.load` raises for a model that must not be served."""
    started = time.perf_counter()
    signature = file_signature(params)
    forecaster = Forecaster.load(params, allow_failed_gate=allow_failed_gate)
    compiled = forecaster.warm_up()
    forecasts: dict[str, dict] = {}
    path = current_files(params, forecaster.metadata)["forecasts"]
    if path.is_file():
        try:
            frame = pd.read_parquet(path)
            clean = frame.astype(object).where(frame.notna(), None)
            for row in clean.to_dict(orient="records"):
                record = {k: (float(v) if isinstance(v, float) else v) for k, v in row.items()}
                if forecaster.routed:
                    record[FAMILY] = forecaster.family(str(row[forecaster.segment]))
                forecasts[str(row[forecaster.segment])] = record
        except Exception as exc:  # the batch file is optional: the model still serves
            logger.warning(
                "%s: batch forecasts not readable (%s); /forecasts answers 404", path, exc
            )
    return Loaded(forecaster, forecasts, signature, compiled, time.perf_counter() - started)
