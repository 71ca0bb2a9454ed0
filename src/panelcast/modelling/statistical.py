"""Per-series statistical forecasters (statsforecast), kept safe and deterministic.

A statistical model is never pickled. What is stored is its **specification**: the
components AutoETS chose (e.g. ``MAdN``), the orders AutoARIMA chose, the Theta variant.
Forecasting refits that fixed specification on the series it was fitted on (one fit, no
search: the same series gives the same parameters, bit for bit) and filters the newer
values through it with the fitted parameters (``forward``): the one-step forecast of period
``t`` reads periods before ``t`` only, as the global model's features do.

Missing values inside a series (periods inserted by ``prepare``) are interpolated
linearly before fitting; rows without a target are never scored.

**Combinations.** A family may name several members joined by ``+``, e.g.
``global+theta``: its forecast is the plain mean of its members' forecasts (the global
model's and each statistical member's). Its specification maps each statistical member to
its own specification (``{"theta": {...}}``); :class:`FittedStat` fits the statistical
members and :func:`blend` averages their mean with the global model's forecast.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: The statistical families and what their specification holds.
STAT_FAMILIES = ("auto_ets", "auto_arima", "theta", "seasonal_naive")
#: The member of a combination that stands for the global model's forecast.
GLOBAL_MEMBER = "global"
#: What joins the members of a combination.
JOIN = "+"


def members(family: str) -> tuple[str, ...]:
    """The members of ``family`` (one for a single family)."""
    return tuple(str(family).split(JOIN))


def stat_members(family: str) -> tuple[str, ...]:
    """The statistical members of ``family`` (empty for ``global`` and ``sklearn``)."""
    return tuple(m for m in members(family) if m in STAT_FAMILIES)


def uses_global(family: str) -> bool:
    """Whether the global model's forecast is a member of ``family``."""
    return GLOBAL_MEMBER in members(family)


def is_combination(family: str) -> bool:
    """Whether ``family`` averages several members."""
    return len(members(family)) > 1


def is_statistical(family: str) -> bool:
    """Whether ``family`` is a statistical family or a valid combination with a
    statistical member (forecast from the segment's series)."""
    parts = members(family)
    if len(parts) == 1:
        return family in STAT_FAMILIES
    return combination_problem(family) is None and bool(stat_members(family))


def statistical_mask(families: Any) -> np.ndarray:
    """:func:`is_statistical` of every element of ``families``."""
    return np.fromiter((is_statistical(str(f)) for f in families), dtype=bool, count=len(families))


def combination_problem(family: str) -> str | None:
    """Why ``family`` is not a valid combination (None when it is): members must be
    ``global`` or statistical families, each at most once, at least two."""
    parts = members(family)
    if len(parts) < 2:
        return None
    allowed = (GLOBAL_MEMBER, *STAT_FAMILIES)
    unknown = [p for p in parts if p not in allowed]
    if unknown:
        return f"has the member(s) {unknown}; members of a combination are {list(allowed)}"
    if len(set(parts)) != len(parts):
        return "names a member twice"
    return None


def combine_name(parts: Any) -> str:
    """The family name of the combination of ``parts`` (``global`` first, then in the
    order of :data:`STAT_FAMILIES`)."""
    order = {name: i for i, name in enumerate((GLOBAL_MEMBER, *STAT_FAMILIES))}
    return JOIN.join(sorted(parts, key=lambda p: order.get(p, len(order))))


def member_specs(family: str, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each statistical member's specification: a single family's ``spec`` is its own, a
    combination's maps member to specification."""
    if not is_combination(family):
        return {family: spec} if family in STAT_FAMILIES else {}
    return {m: dict(spec.get(m, {})) for m in stat_members(family)}


def blend(family: Any, global_pred: Any, stat_pred: Any) -> Any:
    """The forecast of ``family`` from the global model's forecast and the mean of its
    statistical members' (:meth:`FittedStat.one_step`): their weighted mean when the
    global model is a member, else the statistical mean itself."""
    if not uses_global(str(family)):
        return stat_pred
    k = len(stat_members(str(family)))
    return (np.asarray(global_pred, dtype=np.float64) + k * np.asarray(stat_pred)) / (k + 1)


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
    if is_combination(family):
        return {m: select(m, y, season_length, ets_space) for m in stat_members(family)}
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
        # without a significant season AutoTheta decomposes nothing and records no type;
        # the refit on the same series runs the same seasonality test, so any type does
        return {
            "model": str(fitted["modeltype"]),
            "decomposition_type": str(fitted.get("decomposition_type", "multiplicative")),
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
    forecasts any continuation of that series with the fitted parameters.

    For a combination, each statistical member is fitted and :meth:`one_step` gives the
    mean of their forecasts (:func:`blend` adds the global model's)."""

    def __init__(self, family: str, spec: dict[str, Any], y_fit: np.ndarray, season_length: int):
        self.family, self.spec, self.season_length = family, spec, season_length
        self.n_fit = len(y_fit)
        self.parts = (
            [FittedStat(m, s, y_fit, season_length) for m, s in member_specs(family, spec).items()]
            if is_combination(family)
            else []
        )
        if is_combination(family) or family == "seasonal_naive":
            self.model = None
        else:
            self.model = _fixed(family, spec).fit(clean(y_fit))

    def one_step(self, y: np.ndarray) -> tuple[np.ndarray, float]:
        """One-step forecasts of every position of ``y`` (position ``i`` from ``y[:i]``;
        ``y`` starts where the fitted series started) and the forecast after its end.

        Up to the end of the fitted series they are the model's in-sample one-step
        forecasts (over the fitted span, gaps interpolated inside it); after it, each
        comes from the fitted parameters run over the periods before it only (one
        ``forward`` per period: some models, such as Theta's seasonal decomposition,
        would otherwise read the whole series), with a gap among them filled from the
        values before the forecast only (never from a later one). Positions without
        enough history are missing (NaN).
        """
        if self.parts:
            outs = [part.one_step(y) for part in self.parts]
            pred = np.mean([o[0] for o in outs], axis=0)
            return pred, float(np.mean([o[1] for o in outs]))
        y = np.asarray(y, dtype=np.float64)
        n = len(y)
        if self.model is None:
            return _seasonal_naive(y, self.season_length)
        pred = np.full(n, np.nan)
        k = min(n, self.n_fit)
        fitted, nxt = self._in_sample(y, k)
        pred[:k] = fitted
        for i in range(k, n):
            pred[i] = nxt
            nxt = self._next(y, i + 1)
        return np.clip(pred, 0, None), max(nxt, 0.0)

    def _in_sample(self, y: np.ndarray, k: int) -> tuple[np.ndarray, float]:
        """The in-sample one-step forecasts of ``y[:k]`` and the forecast after it (one
        ``forward``; kept per distinct span)."""
        head = clean(y[:k])
        key = head.tobytes()
        cache = self.__dict__.setdefault("_spans", {})
        if key not in cache:
            out = self.model.forward(y=head, h=1, fitted=True)
            fitted = np.asarray(out["fitted"], dtype=np.float64).copy()
            if k:
                fitted[0] = np.nan  # the first value has no history
            cache[key] = fitted, float(out["mean"][0])
        return cache[key]

    def _next(self, y: np.ndarray, i: int) -> float:
        """The forecast of position ``i`` from ``y[:i]`` alone (its gaps filled from the
        values before them)."""
        return float(self.model.forward(y=clean(y[:i]), h=1)["mean"][0])

    def at(self, y: np.ndarray, positions: Any) -> np.ndarray:
        """``one_step(y)[0][positions]``, bit for bit, computing those positions only: the
        in-sample part is one ``forward`` (kept per fitted span), each later position one
        ``forward`` over the periods before it."""
        pos = np.asarray(positions, dtype=np.intp).reshape(-1)
        if self.parts:
            return np.mean([part.at(y, pos) for part in self.parts], axis=0)
        y = np.asarray(y, dtype=np.float64)
        n = len(y)
        if pos.size and (pos.min() < 0 or pos.max() >= n):
            raise IndexError(f"positions must lie in 0..{n - 1} (the series' length is {n})")
        if self.model is None:
            return _seasonal_naive(y, self.season_length)[0][pos]
        k = min(n, self.n_fit)
        fitted, nxt = self._in_sample(y, k)
        pred = np.empty(len(pos))
        for j, i in enumerate(pos.tolist()):
            if i < k:
                pred[j] = fitted[i]
            elif i == k:
                pred[j] = nxt
            else:
                pred[j] = self._next(y, i)
        return np.clip(pred, 0, None)


def _seasonal_naive(y: np.ndarray, m: int) -> tuple[np.ndarray, float]:
    """The value one season earlier (a missing one: the last value before it)."""
    y = pd.Series(np.asarray(y, dtype=np.float64)).ffill().bfill().to_numpy()
    pred = np.full(len(y), np.nan)
    if len(y) > m:
        pred[m:] = y[:-m]
    nxt = float(y[len(y) - m]) if len(y) >= m else float(y[-1])
    return pred, nxt
