"""Stage collect: read the source named in params into a table with its provenance."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..core.config import ProblemSpec, SourceSpec
from ..core.periods import format_period, period_index
from ..data.sources import parse_table, provenance, read_source

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
    record["time_span"] = time_span(frame, problem.time.year_column, problem.time.month_column)
    seg = problem.segment
    record["segments"] = int(frame[seg].nunique()) if seg in frame.columns else None
    logger.info(
        "collected %d rows x %d columns from %s (%d bytes, sha256 %s...)",
        len(frame),
        frame.shape[1],
        source.uri,
        raw.size,
        raw.sha256[:12],
    )
    return frame, record


def time_span(frame: pd.DataFrame, ycol: str, mcol: str) -> dict | None:
    """First and last period, when the time columns are readable (validate checks them)."""
    try:
        index = period_index(pd.to_numeric(frame[ycol]), pd.to_numeric(frame[mcol])).dropna()
    except (KeyError, ValueError, TypeError):
        return None
    if index.empty:
        return None
    return {
        "first": format_period(index.min()),
        "last": format_period(index.max()),
        "months": int(index.nunique()),
    }
