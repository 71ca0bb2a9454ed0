"""Past-only features on a complete grid of periods per segment.

A row is one segment and one *forecast period* ``t`` (of the frequency in
``problem.time``); its target is the observed value at ``t``; every feature uses only
periods strictly before ``t`` (lags start at 1).
With ``scale: log_ratio`` sales features are expressed relative to the segment's
recent level (``log1p(x) - log1p(level)``), so one global model serves small and
large segments alike.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from ..core.config import FeatureSpec, ProblemSpec, WindowSpec
from ..core.errors import DataError, ParamsError
from ..core.periods import (
    LEVEL_FEATURE,
    PERIOD,
    SEASON_FEATURE,
    SEGMENT_FEATURE,
    TARGET,
    WINDOW,
    T,
)
from ..data.timeaxis import time_index

logger = logging.getLogger(__name__)


def meta_columns(problem: ProblemSpec) -> list[str]:
    """Columns of the feature table that are not model inputs."""
    return [problem.segment_column, PERIOD, T, WINDOW, TARGET]


def feature_columns(frame: pd.DataFrame, problem: ProblemSpec) -> list[str]:
    """Model input columns of a feature table, in table order."""
    meta = set(meta_columns(problem))
    return [c for c in frame.columns if c not in meta]


def period_of(frame: pd.DataFrame, problem: ProblemSpec) -> pd.Series:
    """Period index of each row, from the time columns named in ``problem.time``.

    Raises :class:`DataError` naming the column and a few values when a time is missing
    or unreadable (validate refuses such tables; this guards direct callers).
    """
    missing = [c for c in problem.time.columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"params key 'problem.time': column(s) {missing} are not in the table (its "
            f"columns: {list(frame.columns)[:20]})."
        )
    ok, index = time_index(frame, problem.time)
    if not ok.all():
        bad = frame.loc[~ok, list(problem.time.columns)].head(3).to_dict("records")
        raise DataError(
            f"params key 'problem.time' ({problem.time.describe()}): {int((~ok).sum())} "
            f"row(s) have no readable {problem.calendar.unit}, for example {bad}."
        )
    return pd.Series(index, index=frame.index)


def panel(
    table: pd.DataFrame, problem: ProblemSpec, exogenous: list[str]
) -> tuple[pd.DataFrame, int]:
    """A complete grid per segment (first to last period of each segment).

    Returns the grid (segment, t, y, exogenous...) sorted by segment and period, and the
    number of rows inserted for periods absent from the table (their values are missing).
    """
    seg = problem.segment_column
    frame = pd.DataFrame(
        {
            seg: table[seg].astype(str),
            T: period_of(table, problem),
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
    seg = problem.segment_column
    cal = problem.calendar
    grid, inserted = panel(table, problem, spec.exogenous)
    by = grid.groupby(seg, sort=False)
    y = grid["y"]
    lag1 = by["y"].shift(1)
    out = pd.DataFrame({seg: grid[seg], PERIOD: grid[T].map(cal.format), T: grid[T]})
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
        out[SEASON_FEATURE] = (cal.season_of(grid[T]) + 1).astype("int64")
    if spec.segment_feature:
        out[SEGMENT_FEATURE] = pd.Categorical(grid[seg], categories=sorted(grid[seg].unique()))
    out[TARGET] = y

    ts, te = cal.parse(windows.train_start), cal.parse(windows.train_end)
    vs, ve = cal.parse(windows.test_start), cal.parse(windows.test_end)
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
                f"{cal.format(grid[T].min())}..{cal.format(grid[T].max())}."
            )
    logger.info(
        "features: %d rows (%d inserted grid periods, %d without history dropped, "
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


def next_period_features(
    history: pd.DataFrame,
    problem: ProblemSpec,
    spec: FeatureSpec,
    categories: list[str] | None = None,
    until: int | None = None,
) -> pd.DataFrame:
    """Feature rows of the period after each segment's history, as :func:`build_features`
    would compute them, in a few vectorised numpy steps (the serving path).

    ``history`` has the source schema (segment, time columns, target, exogenous), one row
    per segment and period. The forecast period of a segment is the one after its last
    period, or after ``until`` for every segment. ``categories`` are the segment levels
    the model was fitted with (default: the segments present). Returns one row per segment
    with the segment, ``period``, ``t`` and every feature column; a segment without any
    value in its recent window has a missing ``log_level`` and cannot be forecast.
    """
    seg = problem.segment_column
    cal = problem.calendar
    width = spec.history_length
    segments = history[seg].astype(str).to_numpy()
    t = period_of(history, problem).to_numpy()
    names, codes = np.unique(segments, return_inverse=True)
    if until is None:
        last = np.full(len(names), np.iinfo(np.int64).min)
        np.maximum.at(last, codes, t)
    else:
        last = np.full(len(names), int(until))
    offset = last[codes] - t  # 0 = the last period, width - 1 = the oldest one read
    keep = (offset >= 0) & (offset < width)
    rows, cols = codes[keep], width - 1 - offset[keep]

    def matrix(values: np.ndarray) -> np.ndarray:
        out = np.full((len(names), width), np.nan)
        out[rows, cols] = values[keep]
        return out

    y = matrix(history[problem.target].to_numpy(dtype=float))
    exo_last = {
        col: matrix(history[col].to_numpy(dtype=float))[:, width - 1] for col in spec.exogenous
    }
    target_t = last + 1
    out = pd.DataFrame({seg: names, PERIOD: [cal.format(p) for p in target_t], T: target_t})
    for name, values in window_features(y, exo_last, target_t, spec, cal.season_length).items():
        out[name] = values
    if spec.segment_feature:
        levels = sorted(names) if categories is None else list(categories)
        out[SEGMENT_FEATURE] = pd.Categorical(names, categories=levels)
    return out


def window_features(
    y: np.ndarray,
    exo_last: dict[str, np.ndarray],
    target_t: np.ndarray,
    spec: FeatureSpec,
    season_length: int,
) -> dict[str, np.ndarray]:
    """Every feature but the segment, for the periods ``target_t``, in table order.

    ``y`` holds each row's recent target values, oldest first, its last column being the
    period before ``target_t`` (width ``spec.history_length``); ``exo_last`` the exogenous
    values of that period; ``season_length`` places ``target_t`` in its season. The
    expressions :func:`next_period_features` and the service's fast path share, so both
    give the same bits.
    """
    width = y.shape[1]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-missing window: NaN, kept
        level = np.nanmean(y[:, width - spec.level_window :], axis=1)
        rolling = {w: np.nanmean(y[:, width - w :], axis=1) for w in sorted(set(spec.rolling))}
    log_level = np.log1p(level)
    scaled = spec.scale == "log_ratio"

    def scale(values: np.ndarray) -> np.ndarray:
        return np.log1p(values) - log_level if scaled else values

    out: dict[str, np.ndarray] = {}
    for k in sorted(set(spec.lags)):
        out[f"lag_{k}"] = scale(y[:, width - k])
    for w, values in rolling.items():
        out[f"roll_{w}"] = scale(values)
    out[LEVEL_FEATURE] = log_level
    for col in spec.exogenous:
        prev = exo_last[col]
        out[f"exo_{col}"] = np.log1p(np.clip(prev, 0, None)) if scaled else prev
    if spec.calendar:
        out[SEASON_FEATURE] = (np.asarray(target_t) % season_length + 1).astype("int64")
    return out
