"""Stage predict: deploy the model and forecast the periods after the data.

The deployed model has the evaluated model's hyperparameters and is refit on every
labelled period (``predict.refit: all``) or is the evaluated model itself
(``train_window``). Its intervals are calibrated split-conformally on the last
``predict.calibration_periods`` of the training window, forecast by a model fitted
before them; their coverage is measured on the test window with the evaluated model's
forecasts. Everything the service needs ships with it: the model file, its metadata
(version, schema, intervals, gate) and the recent history of every segment.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from ..core.config import Params
from ..core.errors import DataError
from ..core.periods import LEVEL_FEATURE, PERIOD, PREDICTION, SEGMENT_FEATURE, TARGET, WINDOW, T
from ..modelling.features import next_period_features, period_of
from ..modelling.intervals import conformal_offsets, coverage, interval, log_residuals
from ..modelling.model import dumps_model, with_unit

logger = logging.getLogger(__name__)

#: Columns of the forecasts table besides the segment column.
FORECAST = "forecast"


@dataclass(frozen=True)
class Deployment:
    """What the predict stage writes."""

    model_bytes: bytes
    metadata: dict
    serving_state: pd.DataFrame
    forecasts: pd.DataFrame
    metrics: dict


def source_columns(params: Params) -> list[str]:
    """The columns of the source schema the forecasts read: the segment (``series`` for a
    single series), the time columns of ``problem.time``, the target and the exogenous."""
    p = params.problem
    cols = [p.segment_column, *p.time.columns, p.target]
    return cols + [c for c in params.features.exogenous if c not in cols]


def model_version(model_bytes: bytes) -> str:
    """The content hash that names a model file (sha256, first 16 hex digits)."""
    return hashlib.sha256(model_bytes).hexdigest()[:16]


def interval_columns(levels: list[int]) -> list[str]:
    """``lower_80, upper_80, ...`` in level order."""
    return [f"{side}_{level}" for level in levels for side in ("lower", "upper")]


def forecast_frame(
    rows: pd.DataFrame,
    model: Any,
    columns: list[str],
    offsets: dict[int, tuple[float, float]],
    segment: str,
) -> pd.DataFrame:
    """Point forecasts and intervals for next-period feature ``rows`` with history."""
    known = rows[LEVEL_FEATURE].notna().to_numpy()
    point = np.full(len(rows), np.nan)
    if known.any():
        point[known] = model.predict(rows.loc[known, columns])
    out = pd.DataFrame({segment: rows[segment].to_numpy(), PERIOD: rows[PERIOD].to_numpy()})
    out[FORECAST] = point
    for level, pair in offsets.items():
        lower, upper = interval(point, pair)
        out[f"lower_{level}"], out[f"upper_{level}"] = lower, upper
    return out


def predict(
    table: pd.DataFrame,
    features: pd.DataFrame,
    evaluated: Any,
    columns: list[str],
    test_predictions: pd.DataFrame,
    evaluation: dict,
    data_sha256: str,
    params: Params,
) -> Deployment:
    """Deploy, calibrate and forecast the period after the data for every segment."""
    spec, problem = params.predict, params.problem
    seg, cal, unit = problem.segment_column, problem.calendar, problem.unit
    labelled = features[features[TARGET].notna()]
    train = labelled[labelled[WINDOW] == "train"]
    # calibration: a model fitted before the last periods of the training window forecasts them
    cut = int(train[T].max()) - spec.calibration_periods
    early, late = train[train[T] <= cut], train[train[T] > cut]
    if early.empty or late.empty:
        raise DataError(
            f"params key 'predict.calibration_periods' = {spec.calibration_periods} leaves "
            f"{len(early)} rows to fit and {len(late)} to calibrate in the training window "
            f"{params.windows.train_start}..{params.windows.train_end}; make it shorter."
        )
    calibrator = clone(evaluated).fit(early[columns], early[TARGET])
    residuals = log_residuals(late[TARGET].to_numpy(), calibrator.predict(late[columns]))
    offsets = conformal_offsets(residuals, spec.interval_levels)
    logger.info(
        "intervals calibrated on %d residuals of %s..%s",
        len(residuals),
        cal.format(cut + 1),
        cal.format(train[T].max()),
    )
    test_cov = coverage(
        test_predictions[TARGET].to_numpy(), test_predictions[PREDICTION].to_numpy(), offsets
    )
    if spec.refit == "all":
        deployed = clone(evaluated).fit(labelled[columns], labelled[TARGET])
        fitted = labelled
    else:
        deployed, fitted = evaluated, train
    model_bytes = dumps_model(deployed)
    version = model_version(model_bytes)
    categories = (
        [str(c) for c in features[SEGMENT_FEATURE].cat.categories]
        if SEGMENT_FEATURE in features.columns
        else None
    )
    table_t = period_of(table, problem)
    last = int(table_t.max())
    rows = next_period_features(table, problem, params.features, categories, until=last)
    out = forecast_frame(rows, deployed, columns, offsets, seg)
    out["model_version"] = version
    out["data_sha256"] = data_sha256
    missing = out.loc[out[FORECAST].isna(), seg].tolist()
    if missing:
        logger.warning(
            "%d segment(s) have no value in their last %s and get no forecast: %s",
            len(missing),
            cal.count(params.features.history_length),
            missing[:5],
        )
    keep = params.features.history_length
    state = table.loc[table_t > last - keep, source_columns(params)]
    state = state.reset_index(drop=True)
    gate = {
        "passed": bool(evaluation["gate_passed"]),
        "failures": list(evaluation["gate_failures"]),
        "metric": evaluation["metric"],
        "model": evaluation["model"],
        "best_rule": evaluation["best_rule"],
    }
    metadata = {
        "name": "panelcast",
        "version": version,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "refit": spec.refit,
        "training_window": {
            "start": cal.format(fitted[T].min()),
            "end": cal.format(fitted[T].max()),
            "rows": int(len(fitted)),
        },
        "data_sha256": data_sha256,
        "last_period": cal.format(last),
        "gate": gate,
        "features": columns,
        "feature_spec": params.features.model_dump(),
        "segment": seg,
        "segments": categories,
        "input_schema": source_columns(params),
        "target": problem.target,
        "history_periods": keep,
        "interval_levels": list(spec.interval_levels),
        "interval_offsets": {str(k): list(v) for k, v in offsets.items()},
    }
    metrics = {
        "refit": spec.refit,
        "model_version": version,
        "forecast_period": cal.format(last + 1),
        "segments": int(len(out)),
        "segments_without_forecast": len(missing),
        "calibration": {
            "start": cal.format(cut + 1),
            "end": cal.format(train[T].max()),
            "residuals": int(len(residuals)),
        },
        "intervals_on_test_window": test_cov,
        "total_forecast": round(float(np.nansum(out[FORECAST])), 3),
    }
    for level, c in test_cov.items():
        if c["coverage"] is None:
            logger.info("%s%% interval: no observed target in the test window", level)
            continue
        logger.info(
            "%s%% interval: coverage %.3f on the test window (mean width %s)",
            level,
            c["coverage"],
            with_unit(c["mean_width"], unit, 1),
        )
    logger.info(
        "forecast of %s for %d segment(s): total %s",
        cal.format(last + 1),
        int(len(out)),
        with_unit(metrics["total_forecast"], unit, 1),
    )
    return Deployment(model_bytes, metadata, state, out, metrics)
