"""Rule-based benchmarks: ML has to prove its gain over these, scored the same way."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..core.config import ProblemSpec
from ..core.periods import T
from .features import shift_within

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


class GridRows:
    """The rows of a grid as arrays: the segment code of each row (``codes``), its period
    index (``t``), its value (``y``), whether it is in the training window (``train``).

    A lag follows the rows of each segment in table order (``groupby(segment).shift``):
    the rules compute on whole arrays, in one copy per lag, whatever the number of rows.
    """

    def __init__(self, codes: np.ndarray, t: np.ndarray, y: np.ndarray, train: np.ndarray):
        self.codes = np.asarray(codes)
        self.t = np.asarray(t)
        self.y = np.asarray(y, dtype=float)
        self.train = np.asarray(train, dtype=bool)
        n = len(self.codes)
        grouped = n == 0 or bool((self.codes[1:] >= self.codes[:-1]).all())
        self.order = None if grouped else np.argsort(self.codes, kind="stable")
        ordered = self.codes if self.order is None else self.codes[self.order]
        self.starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if n else ordered
        self.lengths = np.diff(np.r_[self.starts, n])

    def lag(self, k: int) -> np.ndarray:
        """``y`` ``k`` rows earlier in the same segment (NaN before its first rows)."""
        if self.order is None:
            return shift_within(self.y, self.starts, self.lengths, k)
        out = np.empty(len(self.y))
        out[self.order] = shift_within(self.y[self.order], self.starts, self.lengths, k)
        return out

    def train_means(self, *keys: np.ndarray) -> pd.Series:
        """Mean of ``y`` over the training rows per value of ``keys`` (pandas' groupby
        mean: the same sums, in row order)."""
        return pd.Series(self.y[self.train]).groupby([k[self.train] for k in keys]).mean()


def _seasonal(rows: GridRows, s: int) -> np.ndarray:
    return rows.lag(s)


def _last(rows: GridRows, s: int) -> np.ndarray:
    return rows.lag(1)


def _segment_month_mean(rows: GridRows, s: int) -> np.ndarray:
    position = rows.t % s
    means = rows.train_means(rows.codes, position)
    table = np.full((int(rows.codes.max(initial=-1)) + 1, s), np.nan)
    if len(means):
        index = means.index
        table[index.get_level_values(0).to_numpy(), index.get_level_values(1).to_numpy()] = (
            means.to_numpy()
        )
    return table[rows.codes, position]


def _drift_naive(rows: GridRows, s: int) -> np.ndarray:
    recent = sum(rows.lag(k) for k in (1, 2, 3))
    season_ago = sum(rows.lag(k + s) for k in (1, 2, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = np.where(season_ago > 0, recent / season_ago, np.nan)
    del recent, season_ago
    pred = rows.lag(s)
    pred *= growth
    return pred


_IMPL: dict[str, Callable[[GridRows, int], np.ndarray]] = {
    "seasonal_naive": _seasonal,
    "last_value": _last,
    "segment_month_mean": _segment_month_mean,
    "drift_naive": _drift_naive,
}


def check_rules(rules: list[str]) -> None:
    """Refuse a rule that is not in :data:`RULES`."""
    unknown = [r for r in rules if r not in _IMPL]
    if unknown:
        raise ValueError(f"unknown rule(s) {unknown}; expected some of {sorted(_IMPL)}.")


def rule_forecasts(
    rows: GridRows, season: int, rules: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each rule's forecast of every row, and where it fell back (see :func:`predict_rules`)."""
    check_rules(rules)
    seg_mean = rows.train_means(rows.codes)
    fallback = rows.lag(1)
    missing = np.isnan(fallback)
    codes = rows.codes[missing]
    known = np.full(int(rows.codes.max(initial=-1)) + 1, np.nan)
    known[seg_mean.index.to_numpy()] = seg_mean.to_numpy()
    fallback[missing] = known[codes]
    fallback[np.isnan(fallback)] = float(pd.Series(rows.y[rows.train]).mean())
    forecasts, fell_back = {}, {}
    for rule in rules:
        pred = _IMPL[rule](rows, season)
        pred[np.isinf(pred)] = np.nan
        gap = np.isnan(pred)
        fell_back[rule] = gap
        pred[gap] = fallback[gap]
        pred[pred < 0] = 0.0  # clip(lower=0): NaN and -0.0 kept
        forecasts[rule] = pred
    return forecasts, fell_back


def predict_rules(
    grid: pd.DataFrame, problem: ProblemSpec, rules: list[str], train_mask: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict every grid row with each rule.

    A rule that cannot answer a row (its inputs are missing) falls back to the last
    observed period, then to the segment's training mean, so every rule scores every
    row; a frame of booleans (True where the rule fell back) is returned to be counted.
    """
    seg = problem.segment_column
    check_rules(rules)
    codes, _ = pd.factorize(grid[seg])
    rows = GridRows(codes, grid[T].to_numpy(), grid["y"].to_numpy(dtype=float), train_mask)
    forecasts, fell_back = rule_forecasts(rows, problem.calendar.season_length, rules)
    out = pd.DataFrame({seg: grid[seg], T: grid[T]})
    fallbacks = pd.DataFrame(index=grid.index)
    for rule in rules:
        fallbacks[rule] = fell_back[rule]
        out[rule] = forecasts[rule]
    return out, fallbacks
