"""Stage collect: read the source named in params into a table with its provenance."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.config import ProblemSpec, SourceSpec, TimeSpec
from ..data.sources import parse_table, provenance, read_source
from ..data.timeaxis import time_index

logger = logging.getLogger(__name__)


def collect(
    source: SourceSpec,
    problem: ProblemSpec,
    tmp_dir: str | Path | None = None,
) -> tuple[pd.DataFrame, dict]:
    """The source as a table, and its provenance record (hash, licence, time span).

    ``tmp_dir``: where a download or a decompressed copy is kept while it is parsed.
    """
    with read_source(
        source.uri,
        source.format,
        timeout_s=source.timeout_s,
        max_seconds=source.max_seconds,
        max_bytes=source.max_bytes,
        tmp_dir=tmp_dir,
    ) as raw:
        frame = parse_table(raw, require_final_newline=source.require_final_newline)
        record = provenance(raw, frame, source.name, source.licence)
    record["time_span"] = time_span(frame, problem.time)
    seg = problem.segment  # a wide table or a single series has no segment column yet
    record["segments"] = (
        int(frame[seg].nunique()) if seg is not None and seg in frame.columns else None
    )
    logger.info(
        "collected %d rows x %d columns from %s (%d bytes, sha256 %s...)",
        len(frame),
        frame.shape[1],
        source.uri,
        raw.size,
        raw.sha256[:12],
    )
    return frame, record


def time_span(frame: pd.DataFrame, time: TimeSpec) -> dict | None:
    """First and last period and the number of distinct periods, in the calendar of
    ``time``, over the rows whose time is readable; ``None`` when a time column is absent
    or no row is readable (validate names them)."""
    if any(c not in frame.columns for c in time.columns):
        return None
    ok, index = time_index(frame, time)
    periods = index[ok]
    if not len(periods):
        return None
    cal = time.calendar
    return {
        "first": cal.format(periods.min()),
        "last": cal.format(periods.max()),
        "periods": int(len(np.unique(periods))),
    }
