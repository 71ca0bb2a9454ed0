"""Rule-based benchmarks: ML has to prove its gain over these, scored the same way."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..core.config import ProblemSpec
from ..core.periods import T

logger = logging.getLogger(__name__)

#: What each rule forecasts, for a season of ``s`` periods (``s`` = 12 for monthly data;
#: with no season, ``s`` = 1, the seasonal rules fall back to the last period).
RULES: dict[str, str] = {
    "seasonal_naive": "the same period one season earlier (same month last year)",
    "last_value": "the last observed period",
    "segment_month_mean": "mean per segment x position in the season (calendar month) over "
    "the training window",
    "drift_naive": "the same period one season earlier x the growth of the last 3 periods "
    "over the same 3 periods one season earlier",
}


def _lag(grid: pd.DataFrame, seg: str, k: int) -> pd.Series:
    return grid.groupby(seg, sort=False)["y"].shift(k)


def _seasonal(grid: pd.DataFrame, seg: str, train: pd.Series, s: int) -> pd.Series:
    return _lag(grid, seg, s)


def _last(grid: pd.DataFrame, seg: str, train: pd.Series, s: int) -> pd.Series:
    return _lag(grid, seg, 1)


def _segment_month_mean(grid: pd.DataFrame, seg: str, train: pd.Series, s: int) -> pd.Series:
    position = grid[T] % s
    means = grid[train].groupby([grid[seg], position])["y"].mean()
    keys = pd.MultiIndex.from_arrays([grid[seg], position])
    return pd.Series(means.reindex(keys).to_numpy(), index=grid.index)


def _drift_naive(grid: pd.DataFrame, seg: str, train: pd.Series, s: int) -> pd.Series:
    recent = sum(_lag(grid, seg, k) for k in (1, 2, 3))
    season_ago = sum(_lag(grid, seg, k + s) for k in (1, 2, 3))
    growth = (recent / season_ago).where(season_ago > 0)
    return _lag(grid, seg, s) * growth


_IMPL: dict[str, Callable[[pd.DataFrame, str, pd.Series, int], pd.Series]] = {
    "seasonal_naive": _seasonal,
    "last_value": _last,
    "segment_month_mean": _segment_month_mean,
    "drift_naive": _drift_naive,
}


def predict_rules(
    grid: pd.DataFrame, problem: ProblemSpec, rules: list[str], train_mask: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict every grid row with each rule.

    A rule that cannot answer a row (its inputs are missing) falls back to the last
    observed period, then to the segment's training mean, so every rule scores every
    row; a frame of booleans (True where the rule fell back) is returned to be counted.
    """
    seg = problem.segment_column
    season = problem.calendar.season_length
    unknown = [r for r in rules if r not in _IMPL]
    if unknown:
        raise ValueError(f"unknown rule(s) {unknown}; expected some of {sorted(_IMPL)}.")
    seg_mean = grid[train_mask].groupby(seg)["y"].mean()
    fallback = _last(grid, seg, train_mask, season).fillna(grid[seg].map(seg_mean))
    fallback = fallback.fillna(float(grid.loc[train_mask, "y"].mean()))
    out = pd.DataFrame({seg: grid[seg], T: grid[T]})
    fallbacks = pd.DataFrame(index=grid.index)
    for rule in rules:
        pred = _IMPL[rule](grid, seg, train_mask, season).replace([np.inf, -np.inf], np.nan)
        fallbacks[rule] = pred.isna()
        out[rule] = pred.fillna(fallback).clip(lower=0)
    return out, fallbacks
