"""Past-only features on a complete monthly grid per segment.

A row is one segment and one *forecast month* ``t``; its target is the observed value
at ``t``; every feature uses only months strictly before ``t`` (lags start at 1).
With ``scale: log_ratio`` sales features are expressed relative to the segment's
recent level (``log1p(x) - log1p(level)``), so one global model serves small and
large segments alike.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..core.config import FeatureSpec, ProblemSpec, WindowSpec
from ..core.errors import ParamsError
from ..core.periods import (
    LEVEL_FEATURE,
    PERIOD,
    SEASON_FEATURE,
    SEGMENT_FEATURE,
    TARGET,
    WINDOW,
    T,
    format_period,
    parse_period,
    period_index,
    season_of,
)

logger = logging.getLogger(__name__)


def meta_columns(problem: ProblemSpec) -> list[str]:
    """Columns of the feature table that are not model inputs."""
    return [problem.segment, PERIOD, T, WINDOW, TARGET]


def feature_columns(frame: pd.DataFrame, problem: ProblemSpec) -> list[str]:
    """Model input columns of a feature table, in table order."""
    meta = set(meta_columns(problem))
    return [c for c in frame.columns if c not in meta]


def month_index(frame: pd.DataFrame, problem: ProblemSpec) -> pd.Series:
    """Period index of each row, from the time columns named in params."""
    year = frame[problem.time.year_column].astype("int64")
    month = frame[problem.time.month_column].astype("int64")
    return period_index(year, month)


def panel(
    table: pd.DataFrame, problem: ProblemSpec, exogenous: list[str]
) -> tuple[pd.DataFrame, int]:
    """A complete monthly grid per segment (first to last month of each segment).

    Returns the grid (segment, t, y, exogenous...) sorted by segment and month, and the
    number of rows inserted for months absent from the table (their values are missing).
    """
    seg = problem.segment
    frame = pd.DataFrame(
        {
            seg: table[seg].astype(str),
            T: month_index(table, problem),
            "y": table[problem.target].astype(float),
        }
    )
    for col in exogenous:
        frame[col] = table[col].astype(float)
    bounds = frame.groupby(seg, sort=True)[T].agg(["min", "max"])
    grid = pd.DataFrame(
        {
            seg: np.repeat(bounds.index.to_numpy(), (bounds["max"] - bounds["min"] + 1).to_numpy()),
            T: np.concatenate(
                [np.arange(lo, hi + 1) for lo, hi in zip(bounds["min"], bounds["max"], strict=True)]
            ),
        }
    )
    full = grid.merge(frame, on=[seg, T], how="left", validate="one_to_one")
    inserted = len(full) - len(frame)
    return full.reset_index(drop=True), inserted


def build_features(
    table: pd.DataFrame, problem: ProblemSpec, spec: FeatureSpec, windows: WindowSpec
) -> tuple[pd.DataFrame, dict]:
    """Build the feature table and a summary of what was counted and dropped."""
    seg = problem.segment
    grid, inserted = panel(table, problem, spec.exogenous)
    by = grid.groupby(seg, sort=False)
    y = grid["y"]
    lag1 = by["y"].shift(1)
    out = pd.DataFrame({seg: grid[seg], PERIOD: grid[T].map(format_period), T: grid[T]})
    level = _rolling_mean(lag1, grid[seg], spec.level_window)
    log_level = np.log1p(level)
    scaled = spec.scale == "log_ratio"

    def scale(values: pd.Series) -> pd.Series:
        return np.log1p(values) - log_level if scaled else values

    for k in sorted(set(spec.lags)):
        out[f"lag_{k}"] = scale(by["y"].shift(k))
    for w in sorted(set(spec.rolling)):
        out[f"roll_{w}"] = scale(_rolling_mean(lag1, grid[seg], w))
    out[LEVEL_FEATURE] = log_level
    for col in spec.exogenous:
        prev = by[col].shift(1)
        out[f"exo_{col}"] = np.log1p(prev.clip(lower=0)) if scaled else prev
    if spec.calendar:
        out[SEASON_FEATURE] = (season_of(grid[T]) + 1).astype("int64")
    if spec.segment_feature:
        out[SEGMENT_FEATURE] = pd.Categorical(grid[seg], categories=sorted(grid[seg].unique()))
    out[TARGET] = y

    ts, te = parse_period(windows.train_start), parse_period(windows.train_end)
    vs, ve = parse_period(windows.test_start), parse_period(windows.test_end)
    window = np.select(
        [(out[T] >= ts) & (out[T] <= te), (out[T] >= vs) & (out[T] <= ve)],
        ["train", "test"],
        "other",
    )
    out[WINDOW] = window
    no_history = out[LEVEL_FEATURE].isna()
    result = out.loc[~no_history, meta_columns(problem) + feature_columns(out, problem)]
    result = result.sort_values([T, seg], kind="stable").reset_index(drop=True)
    summary = {
        "rows": int(len(result)),
        "grid_rows_inserted": int(inserted),
        "dropped_no_history": int(no_history.sum()),
        "target_missing": int(result[TARGET].isna().sum()),
        "rows_by_window": {
            w: {
                "rows": int((result[WINDOW] == w).sum()),
                "with_target": int(((result[WINDOW] == w) & result[TARGET].notna()).sum()),
            }
            for w in ("train", "test", "other")
        },
        "features": feature_columns(result, problem),
    }
    for w in ("train", "test"):
        if summary["rows_by_window"][w]["with_target"] == 0:
            first, last = getattr(windows, w + "_start"), getattr(windows, w + "_end")
            raise ParamsError(
                f"params keys 'windows.{w}_start/{w}_end': the {w} window ({first}..{last}) "
                f"holds no row with an observed target; the data spans "
                f"{format_period(grid[T].min())}..{format_period(grid[T].max())}."
            )
    logger.info(
        "features: %d rows (%d inserted grid months, %d without history dropped, "
        "%d missing targets)",
        summary["rows"],
        inserted,
        summary["dropped_no_history"],
        summary["target_missing"],
    )
    return result, summary


def _rolling_mean(values: pd.Series, groups: pd.Series, window: int) -> pd.Series:
    """Mean of the last ``window`` values within each group, ignoring missing ones."""
    rolled = values.groupby(groups, sort=False).rolling(window, min_periods=1).mean()
    return rolled.reset_index(level=0, drop=True).sort_index()
