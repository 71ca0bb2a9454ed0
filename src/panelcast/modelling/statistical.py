"""Per-series statistical forecasters (statsforecast), kept safe and deterministic.

A statistical model is never pickled. What is stored is its **specification**: the
components AutoETS chose (e.g. ``MAdN``), the orders AutoARIMA chose, the Theta variant.
Forecasting refits that fixed specification on the series it was fitted on (one fit, no
search: the same series gives the same parameters, bit for bit) and filters the newer
values through it with the fitted parameters (``forward``): the one-step forecast of period
``t`` reads periods before ``t`` only, as the global model's features do.

Missing values inside a series (periods inserted by ``prepare``) are interpolated
linearly before fitting; rows without a target are never scored.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: The statistical families and what their specification holds.
STAT_FAMILIES = ("auto_ets", "auto_arima", "theta", "seasonal_naive")


def clean(y: np.ndarray) -> np.ndarray:
    """``y`` as float64 with inner gaps interpolated and leading/trailing gaps filled with
    the nearest value (statsforecast needs a series without missing values)."""
    y = np.asarray(y, dtype=np.float64)
    missing = np.isnan(y)
    if not missing.any():
        return y
    if missing.all():
        raise ValueError("the series has no labelled value")
    idx = np.arange(len(y))
    out = y.copy()
    out[missing] = np.interp(idx[missing], idx[~missing], y[~missing])
    return out


def select(
    family: str, y: np.ndarray, season_length: int, ets_space: str = "ZZZ"
) -> dict[str, Any]:
    """Run the family's automatic selection on ``y`` and return the chosen specification
    (JSON-able): what :meth:`FittedStat.one_step` refits. ``ets_space`` is AutoETS's
    search space (``train.per_segment.ets_space``)."""
    if family == "seasonal_naive":
        return {}
    y = clean(y)
    m = season_length if len(y) >= 2 * season_length else 1
    if family == "auto_ets":
        from statsforecast.models import AutoETS

        comp = AutoETS(season_length=m, model=ets_space).fit(y).model_["components"]
        return {"model": comp[:3], "damped": comp[3] != "N", "season_length": m}
    if family == "auto_arima":
        from statsforecast.models import AutoARIMA

        fitted = AutoARIMA(season_length=m).fit(y).model_
        p, q, P, Q, period, d, D = (int(v) for v in fitted["arma"])
        coef = fitted["coef"]
        return {
            "order": [p, d, q],
            "seasonal_order": [P, D, Q],
            "season_length": period,
            "include_mean": "intercept" in coef,
            "include_drift": "drift" in coef,
        }
    if family == "theta":
        from statsforecast.models import AutoTheta

        fitted = AutoTheta(season_length=m).fit(y).model_
        return {
            "model": str(fitted["modeltype"]),
            "decomposition_type": str(fitted["decomposition_type"]),
            "season_length": m,
        }
    raise ValueError(f"unknown statistical family {family!r}; expected one of {STAT_FAMILIES}")


def _fixed(family: str, spec: dict[str, Any]) -> Any:
    """An unfitted statsforecast model with the specification fixed (no search)."""
    if family == "auto_ets":
        from statsforecast.models import AutoETS

        return AutoETS(
            season_length=spec["season_length"], model=spec["model"], damped=spec["damped"]
        )
    if family == "auto_arima":
        from statsforecast.models import ARIMA

        return ARIMA(
            order=tuple(spec["order"]),
            seasonal_order=tuple(spec["seasonal_order"]),
            season_length=spec["season_length"],
            include_mean=spec["include_mean"],
            include_drift=spec["include_drift"],
        )
    if family == "theta":
        from statsforecast.models import AutoTheta

        return AutoTheta(
            season_length=spec["season_length"],
            model=spec["model"],
            decomposition_type=spec["decomposition_type"],
        )
    raise ValueError(f"unknown statistical family {family!r}; expected one of {STAT_FAMILIES}")


class FittedStat:
    """A statistical model refitted from its specification on ``y_fit``; :meth:`one_step`
    forecasts any continuation of that series with the fitted parameters."""

    def __init__(self, family: str, spec: dict[str, Any], y_fit: np.ndarray, season_length: int):
        self.family, self.spec, self.season_length = family, spec, season_length
        self.n_fit = len(y_fit)
        self.model = None if family == "seasonal_naive" else _fixed(family, spec).fit(clean(y_fit))

    def one_step(self, y: np.ndarray) -> tuple[np.ndarray, float]:
        """One-step forecasts of every position of ``y`` (position ``i`` from ``y[:i]``;
        ``y`` starts where the fitted series started) and the forecast after its end.

        Up to the end of the fitted series they are the model's in-sample one-step
        forecasts; after it, each comes from the fitted parameters run over the periods
        before it only (one ``forward`` per period: some models, such as Theta's seasonal
        decomposition, would otherwise read the whole series). Positions without enough
        history are missing (NaN).
        """
        y = clean(y)
        if self.model is None:
            return _seasonal_naive(y, self.season_length)
        n = len(y)
        pred = np.full(n, np.nan)
        k = min(n, self.n_fit)
        out = self.model.forward(y=y[:k], h=1, fitted=True)
        pred[:k] = np.asarray(out["fitted"], dtype=np.float64)
        pred[0] = np.nan  # the first value has no history
        nxt = float(out["mean"][0])
        for i in range(k, n):
            if i > k - 1:
                pred[i] = nxt
            nxt = float(self.model.forward(y=y[: i + 1], h=1)["mean"][0])
        return np.clip(pred, 0, None), max(nxt, 0.0)


def _seasonal_naive(y: np.ndarray, m: int) -> tuple[np.ndarray, float]:
    pred = np.full(len(y), np.nan)
    if len(y) > m:
        pred[m:] = y[:-m]
    nxt = float(y[len(y) - m]) if len(y) >= m else float(y[-1])
    return pred, nxt
