"""Stage collect: read the source named in params; write an immutable snapshot, its provenance."""

import logging

import pandas as pd

from panelcast.cli import run_stage
from panelcast.config import format_month
from panelcast.io import write_json, write_parquet
from panelcast.sources import parse_table, provenance, read_source

logger = logging.getLogger("panelcast.stages.collect")


def main(params, args) -> None:
    src, problem = params.source, params.problem
    raw = read_source(src.uri, src.format)
    frame = parse_table(raw)
    record = provenance(raw, frame, src.name, src.licence)
    record["time_span"] = _time_span(frame, problem.time.year_column, problem.time.month_column)
    seg = problem.segment
    record["segments"] = int(frame[seg].nunique()) if seg in frame.columns else None
    write_parquet(src.snapshot, frame)
    write_json("metrics/collect.json", record)
    logger.info(
        "collected %d rows x %d columns from %s (sha256 %s...)",
        len(frame),
        frame.shape[1],
        src.uri,
        raw.sha256[:12],
    )


def _time_span(frame: pd.DataFrame, ycol: str, mcol: str) -> dict | None:
    """First and last month, when the time columns are readable (validate checks them)."""
    try:
        index = (pd.to_numeric(frame[ycol]) * 12 + pd.to_numeric(frame[mcol]) - 1).dropna()
        return {
            "first": format_month(int(index.min())),
            "last": format_month(int(index.max())),
            "months": int(index.nunique()),
        }
    except (KeyError, ValueError, TypeError):
        return None


if __name__ == "__main__":
    run_stage("collect", main)
