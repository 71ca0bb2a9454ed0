"""Prediction intervals calibrated on held-out residuals (split-conformal).

Residuals are taken on the model's own scale-free axis, ``log1p(actual) -
log1p(forecast)``, so one pair of offsets serves small and large segments alike. For a
level of 80 % the offsets are the conformal quantiles at 10 % and 90 % of the
calibration residuals (with the finite-sample correction), and the interval is
``expm1(log1p(forecast) + offset)``, never below zero.

Sliding-window (online) split-conformal: each period ``t`` of a window of forecasts gets
the offsets of the residuals of the ``window`` periods just before it (``t - window`` to
``t - 1``), never of ``t`` or later: what is known when ``t`` is forecast one step ahead.
The calibration follows the recent volatility instead of the one of a fixed past window.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from ..core.periods import T

logger = logging.getLogger(__name__)

#: The residual column of a residual table (beside the period index ``t``).
RESIDUAL = "residual"
#: Fewest calibration residuals a period needs, whatever the levels (see :func:`min_residuals`).
MIN_RESIDUALS = 10


def log_residuals(actual: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """``log1p(actual) - log1p(forecast)`` where both are known."""
    actual = np.asarray(actual, dtype=float)
    forecast = np.clip(np.asarray(forecast, dtype=float), 0, None)
    keep = np.isfinite(actual) & np.isfinite(forecast)
    return np.log1p(np.clip(actual[keep], 0, None)) - np.log1p(forecast[keep])


def conformal_offsets(residuals: np.ndarray, levels: list[int]) -> dict[int, tuple[float, float]]:
    """Lower and upper offsets per level (percent) from calibration ``residuals``."""
    r = np.sort(np.asarray(residuals, dtype=float))
    n = len(r)
    if n == 0:
        raise ValueError("conformal_offsets needs at least one calibration residual, got 0.")
    out = {}
    for level in levels:
        lo, hi = _ranks(n, level)
        out[level] = (float(r[max(1, lo) - 1]), float(r[min(n, hi) - 1]))
    return out


def _ranks(n: int, level: int) -> tuple[int, int]:
    """1-based ranks of the lower and upper split-conformal bounds among ``n`` residuals
    (unclipped: outside ``1..n`` when ``n`` is too small for ``level``)."""
    tail = (1 - level / 100) / 2
    # k-th smallest with k = ceil((n + 1)(1 - tail)): the split-conformal upper bound
    return math.floor((n + 1) * tail), math.ceil((n + 1) * (1 - tail))


def interval(forecast: np.ndarray, offsets: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds around ``forecast`` for one level's offsets."""
    base = np.log1p(np.clip(np.asarray(forecast, dtype=float), 0, None))
    lower = np.clip(np.expm1(base + offsets[0]), 0, None)
    upper = np.clip(np.expm1(base + offsets[1]), 0, None)
    return lower, upper


def coverage(
    actual: np.ndarray, forecast: np.ndarray, offsets: dict[int, tuple[float, float]]
) -> dict[str, dict[str, float]]:
    """Share of ``actual`` inside each level's interval, and the mean interval width."""
    actual = np.asarray(actual, dtype=float)
    forecast = np.asarray(forecast, dtype=float)
    known = np.isfinite(actual)
    out = {}
    for level, pair in offsets.items():
        lower, upper = interval(forecast[known], pair)
        inside = (actual[known] >= lower) & (actual[known] <= upper)
        out[str(level)] = {
            "nominal": level / 100,
            "coverage": round(float(inside.mean()), 4) if known.any() else None,
            "mean_width": round(float((upper - lower).mean()), 3) if known.any() else None,
            "n": int(known.sum()),
        }
    return out


def interval_columns(levels: Iterable[int]) -> list[str]:
    """``lower_80, upper_80, ...`` in level order: the names of the interval bounds."""
    return [f"{side}_{level}" for level in levels for side in ("lower", "upper")]


def coverage_tolerance(level: int) -> float:
    """Allowed gap between empirical and nominal coverage, in percentage points: 3 below a
    90 % level, 2 at or above (the tails are thinner, so the promise is tighter)."""
    return 3.0 if level < 90 else 2.0


def min_residuals(levels: Iterable[int]) -> int:
    """Fewest calibration residuals a period needs for intervals at every one of ``levels``.

    At least :data:`MIN_RESIDUALS`, and enough for each level's conformal bounds to be
    order statistics of the residuals (not their minimum or maximum by clipping): 9 at
    80 %, 39 at 95 %, 199 at 99 %. Fewer residuals would give the interval of a lower
    level than promised.
    """
    need = MIN_RESIDUALS
    for level in levels:
        if not 0 < level < 100:
            raise ValueError(f"levels must be percentages strictly between 0 and 100, got {level}.")
        n = 1
        while not 1 <= _ranks(n, level)[0] <= _ranks(n, level)[1] <= n:
            n += 1
        need = max(need, n)
    return need


def residual_table(t: np.ndarray, actual: np.ndarray, forecast: np.ndarray) -> pd.DataFrame:
    """The period index ``t`` and :func:`log_residuals` of every row whose actual and
    forecast are both known (the others have no residual), sorted by period."""
    t = np.asarray(t, dtype=np.int64)
    actual = np.asarray(actual, dtype=float)
    forecast = np.asarray(forecast, dtype=float)
    if not len(t) == len(actual) == len(forecast):
        raise ValueError(
            f"t, actual and forecast must have the same length, got {len(t)}, "
            f"{len(actual)} and {len(forecast)}."
        )
    keep = np.isfinite(actual) & np.isfinite(forecast)
    table = pd.DataFrame({T: t[keep], RESIDUAL: log_residuals(actual[keep], forecast[keep])})
    return table.sort_values(T, kind="stable").reset_index(drop=True)


def _checked(residuals: pd.DataFrame, window: int, levels: list[int]) -> pd.DataFrame:
    """``residuals`` sorted by period, refused with a message when unusable."""
    missing = [c for c in (T, RESIDUAL) if c not in residuals.columns]
    if missing:
        raise ValueError(
            f"the residual table must have columns {[T, RESIDUAL]}; missing {missing} "
            f"(found {list(residuals.columns)})."
        )
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"window must be a positive number of periods, got {window!r}.")
    bad = [level for level in levels if not 0 < level < 100]
    if not levels or bad:
        raise ValueError(f"levels must be percentages strictly between 0 and 100, got {levels}.")
    values = residuals[RESIDUAL].to_numpy(dtype=float)
    if not np.isfinite(values).all():
        raise ValueError(
            f"the residual table holds {int((~np.isfinite(values)).sum())} missing or "
            "infinite residuals; build it with residual_table(), which leaves them out."
        )
    return residuals[[T, RESIDUAL]].sort_values(T, kind="stable")


def rolling_offsets(
    residuals: pd.DataFrame,
    periods: Iterable[int],
    window: int,
    levels: list[int],
    minimum: int | None = None,
) -> dict[int, dict[int, tuple[float, float]]]:
    """Offsets per level for each of ``periods``, from the residuals of the ``window``
    periods before it.

    ``residuals`` holds a period index ``t`` and a log residual per row (see
    :func:`residual_table`). Period ``p`` is calibrated on the residuals with
    ``p - window <= t < p`` only. A level needs ``minimum`` residuals in the window
    (default: :func:`min_residuals` of that level): a period has no offsets at the levels
    it has too few residuals for, and is left out when it has none at all.
    """
    table = _checked(residuals, window, levels)
    need = {
        level: min_residuals([level]) if minimum is None else max(1, int(minimum))
        for level in levels
    }
    t = table[T].to_numpy(dtype=np.int64)
    values = table[RESIDUAL].to_numpy(dtype=float)
    out = {}
    for p in sorted({int(p) for p in periods}):
        start, stop = np.searchsorted(t, [p - window, p], side="left")
        enough = [level for level in levels if stop - start >= need[level]]
        if enough:
            out[p] = conformal_offsets(values[start:stop], enough)
    return out


def latest_offsets(
    residuals: pd.DataFrame,
    window: int,
    levels: list[int],
    before: int | None = None,
    minimum: int | None = None,
) -> dict[int, tuple[float, float]]:
    """Offsets per level from the residuals of the last ``window`` periods before period
    ``before`` (default: the period after the last residual), to deploy with the next
    forecasts; :func:`rolling_offsets` of that single period.

    Refused when the window holds too few residuals for a level (``minimum``, default
    :func:`min_residuals`); ``minimum=1`` accepts any, the widest bounds then being the
    extreme residuals.
    """
    table = _checked(residuals, window, levels)
    if table.empty:
        raise ValueError("latest_offsets needs calibration residuals, got an empty table.")
    if before is None:
        before = int(table[T].iloc[-1]) + 1
    got = rolling_offsets(table, [before], window, levels, minimum).get(before, {})
    short = [level for level in levels if level not in got]
    if short:
        n = int(((table[T] >= before - window) & (table[T] < before)).sum())
        need = min_residuals(short) if minimum is None else max(1, int(minimum))
        raise ValueError(
            f"the {window} periods before period {before} hold {n} residuals, but the "
            f"levels {short} need at least {need}; give more residuals or a longer window."
        )
    return {level: got[level] for level in levels}


def rolling_bounds(
    forecast: np.ndarray,
    t: np.ndarray,
    offsets: Mapping[int, Mapping[int, tuple[float, float]]],
    levels: list[int],
) -> pd.DataFrame:
    """The interval bounds (:func:`interval_columns`) of each forecast from the offsets
    of its period ``t``; missing where the period has no offsets at that level or the
    forecast is missing."""
    forecast = np.asarray(forecast, dtype=float)
    t = np.asarray(t, dtype=np.int64)
    if len(forecast) != len(t):
        raise ValueError(
            f"forecast and t must have the same length, got {len(forecast)} and {len(t)}."
        )
    base = np.log1p(np.clip(forecast, 0, None))
    out = {}
    missing = (np.nan, np.nan)
    for level in levels:
        pairs = [offsets.get(p, {}).get(level, missing) for p in t.tolist()]
        lo = np.array([pair[0] for pair in pairs], dtype=float)
        hi = np.array([pair[1] for pair in pairs], dtype=float)
        out[f"lower_{level}"] = np.clip(np.expm1(base + lo), 0, None)
        out[f"upper_{level}"] = np.clip(np.expm1(base + hi), 0, None)
    return pd.DataFrame(out, columns=interval_columns(levels))


def rolling_coverage(
    actual: np.ndarray,
    forecast: np.ndarray,
    t: np.ndarray,
    offsets: Mapping[int, Mapping[int, tuple[float, float]]],
    levels: list[int],
    tolerance: Mapping[int, float] | None = None,
) -> dict[str, dict]:
    """Coverage and mean width of each level's intervals over the rows with an actual
    value and an interval (``offsets`` per period, from :func:`rolling_offsets`).

    Per level: ``nominal``, ``coverage``, ``mean_width`` (in the unit of the target),
    ``n`` (rows counted), ``uncalibrated`` (rows with an actual value but no interval),
    ``target_points`` (``tolerance[level]``, default :func:`coverage_tolerance`) and
    ``within_target`` (coverage within that many points of nominal).
    """
    actual = np.asarray(actual, dtype=float)
    bounds = rolling_bounds(forecast, t, offsets, levels)
    if len(actual) != len(bounds):
        raise ValueError(
            f"actual and forecast must have the same length, got {len(actual)} and {len(bounds)}."
        )
    known = np.isfinite(actual)
    out = {}
    for level in levels:
        lower = bounds[f"lower_{level}"].to_numpy()
        upper = bounds[f"upper_{level}"].to_numpy()
        rows = known & np.isfinite(lower) & np.isfinite(upper)
        inside = (actual[rows] >= lower[rows]) & (actual[rows] <= upper[rows])
        points = float(coverage_tolerance(level) if tolerance is None else tolerance[level])
        cover = float(inside.mean()) if rows.any() else None
        out[str(level)] = {
            "nominal": level / 100,
            "coverage": None if cover is None else round(cover, 4),
            "mean_width": round(float((upper[rows] - lower[rows]).mean()), 3)
            if rows.any()
            else None,
            "n": int(rows.sum()),
            "uncalibrated": int((known & ~rows).sum()),
            "target_points": points,
            "within_target": cover is not None and abs(cover - level / 100) * 100 <= points,
        }
    return out
