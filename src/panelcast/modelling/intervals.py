"""Prediction intervals calibrated on held-out residuals (split-conformal).

Residuals are taken on the model's own scale-free axis, ``log1p(actual) -
log1p(forecast)``, so one pair of offsets serves small and large segments alike. For a
level of 80 % the offsets are the conformal quantiles at 10 % and 90 % of the
calibration residuals (with the finite-sample correction), and the interval is
``expm1(log1p(forecast) + offset)``, never below zero.
"""

from __future__ import annotations

import math

import numpy as np


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
        tail = (1 - level / 100) / 2
        # k-th smallest with k = ceil((n + 1)(1 - tail)): the split-conformal upper bound
        hi = min(n, math.ceil((n + 1) * (1 - tail))) - 1
        lo = max(1, math.floor((n + 1) * tail)) - 1
        out[level] = (float(r[lo]), float(r[hi]))
    return out


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
