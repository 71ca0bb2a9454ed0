"""Forecast accuracy metrics, overall and per segment."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.io import clean_float


def scores(
    y_true: np.ndarray | pd.Series, y_pred: np.ndarray | pd.Series
) -> dict[str, float | None]:
    """MAE, RMSE, WAPE (sum |error| / sum |actual|) and R2 on rows with an observed target."""
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}; expected equal."
        )
    if np.isnan(y_pred[~np.isnan(y_true)]).any():
        raise ValueError("y_pred has missing values where the target is observed.")
    ok = ~np.isnan(y_true)
    t, p = y_true[ok], y_pred[ok]
    if t.size == 0:
        raise ValueError("no row with an observed target to score.")
    err = p - t
    denom = np.abs(t).sum()
    ss_tot = ((t - t.mean()) ** 2).sum()
    return {
        "n": int(t.size),
        "mae": clean_float(np.abs(err).mean()),
        "rmse": clean_float(np.sqrt((err**2).mean())),
        "wape": clean_float(np.abs(err).sum() / denom) if denom > 0 else None,
        "r2": clean_float(1 - (err**2).sum() / ss_tot) if ss_tot > 0 else None,
    }


def scores_by(frame: pd.DataFrame, by: str, truth: str, pred: str) -> pd.DataFrame:
    """Per-group scores as a tidy frame (one row per group)."""
    rows = []
    for key, part in frame.groupby(by, sort=True, observed=True):
        if part[truth].notna().any():
            rows.append({by: key, **scores(part[truth], part[pred])})
    return pd.DataFrame(rows)
