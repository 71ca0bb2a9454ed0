"""Stage predict: deploy the models and forecast the periods after the data.

The deployed global model has the evaluated model's hyperparameters and is refit on every
labelled period (``predict.refit: all``) or is the evaluated model itself
(``train_window``). Its intervals are calibrated split-conformally on the latest
``predict.calibration_periods`` periods of out-of-sample residuals of the deployed choice
(its CV fold forecasts, then its test-window forecasts); the evaluate stage measures the
same procedure period by period on the test window. Everything the service needs ships
with it: the model file, its metadata (version, schema, intervals, gate) and the recent
history of every segment.

With ``train.strategy`` ``per_segment``, ``best_of`` or ``pooled``, each segment's own model (the
train stage's manifest, :mod:`panelcast.modelling.routing`) is deployed too, into
``paths.deployed_segments``: a manifest with the same entries (``global`` ones pointing
at the deployed global model), the scikit-learn models refit on their segment's
labelled rows (``refit: all``) or kept (``train_window``), and for the statistical
models their specification, the period their fit ends (``fit_end``) and, in
``series.parquet``, their series from their first labelled period to their last one
(refit on the part up to ``fit_end``; with ``train_window`` the later periods are only
filtered through the fitted model), so that the service refits them without the
training data. Those segments are forecast by their own model, and the deployment's
version then hashes the global model with the deployed manifest. One set of interval
offsets serves every segment: the residuals they come from are those of each segment's
deployed model (pooled over segments, on the log scale).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from ..core.config import Params
from ..core.errors import DataError
from ..core.io import dumps_json, parquet_bytes
from ..core.periods import LEVEL_FEATURE, PERIOD, PREDICTION, SEGMENT_FEATURE, TARGET, WINDOW, T
from ..modelling.features import next_period_features, period_of
from ..modelling.intervals import interval, latest_offsets, residual_table
from ..modelling.many import (
    CV_FORECASTS,
    GLOBAL,
    SKLEARN,
    global_manifest,
    period_grid,
    segment_file,
)
from ..modelling.model import dumps_model, with_unit
from ..modelling.routing import Router
from ..modelling.statistical import (
    STAT_FAMILIES,
    FittedStat,
    blend,
    is_statistical,
    statistical_mask,
)
from .evaluate import cv_residuals

logger = logging.getLogger(__name__)

#: Columns of the forecasts table besides the segment column.
FORECAST = "forecast"
#: The file of ``paths.deployed_segments`` holding the statistical segments' series.
SERIES_FILE = "series.parquet"


@dataclass(frozen=True)
class Deployment:
    """What the predict stage writes; ``segment_manifest`` and ``segment_files`` (names
    relative to it) go to ``paths.deployed_segments``."""

    model_bytes: bytes
    metadata: dict
    serving_state: pd.DataFrame
    forecasts: pd.DataFrame
    metrics: dict
    segment_manifest: dict = field(default_factory=dict)
    segment_files: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class SegmentDeployment:
    """The deployed segment models: the manifest, its files, and the models themselves
    (scikit-learn ones by segment; statistical ones as :class:`StatSeries`)."""

    manifest: dict
    files: dict[str, bytes]
    sklearn: dict[str, Any]
    stat: dict[str, StatSeries]

    @cached_property
    def routes(self) -> dict[str, str]:
        """The family of every segment with a model of its own."""
        return {
            str(e["segment"]): str(e["family"])
            for e in self.manifest.get("models", [])
            if e["family"] != GLOBAL
        }

    @property
    def routed(self) -> bool:
        """Whether some segment is forecast by a model of its own."""
        return bool(self.routes)

    def family(self, segment: str) -> str:
        """The deployed family of ``segment`` (``global`` for one the manifest lacks)."""
        return self.routes.get(str(segment), GLOBAL)

    def families(self, segments: pd.Series) -> np.ndarray:
        """The deployed family of each value of ``segments``."""
        return segments.astype(str).map(self.routes).fillna(GLOBAL).to_numpy(dtype=object)


@dataclass(frozen=True)
class StatSeries:
    """A statistical segment's deployed model: its series on every period from ``t0``
    (missing where absent) and the model refit on its first ``fit_end - t0 + 1`` values."""

    t0: int
    y: np.ndarray
    model: FittedStat

    @property
    def end(self) -> int:
        """The last period of the stored series."""
        return self.t0 + len(self.y) - 1


def series_grid(t: np.ndarray, y: np.ndarray, segment: str) -> tuple[int, np.ndarray]:
    """A segment's series on every period from its first labelled one to its last
    (missing values where a period is absent): ``(first period, values)``."""
    t = np.asarray(t, dtype=np.int64)
    y = np.asarray(y, dtype=np.float64)
    labelled = ~np.isnan(y)
    if not labelled.any():
        raise DataError(
            f"segment {segment!r}: no labelled period; its statistical model cannot be "
            f"refit (expected at least one observed target)."
        )
    keep = t >= int(t[labelled].min())
    grid_t, out = period_grid(t[keep], y[keep])
    return int(grid_t[0]), out


def fit_stat(entry: dict, t0: int, y: np.ndarray, season_length: int) -> StatSeries:
    """Refit a deployed statistical entry (family, ``candidate`` specification,
    ``fit_end``) on its series ``y`` starting at period ``t0``."""
    segment, family, fit_end = entry["segment"], entry["family"], int(entry["fit_end"])
    if fit_end < t0:
        raise DataError(
            f"segment {segment!r}: the {family} model's fit ends at period {fit_end}, before "
            f"the first labelled period {t0} of its series; expected at least one."
        )
    try:
        model = FittedStat(family, entry["candidate"], y[: fit_end - t0 + 1], season_length)
    except Exception as exc:
        raise DataError(
            f"segment {segment!r}: the {family} model {entry['candidate']} could not be "
            f"refit on {min(len(y), fit_end - t0 + 1)} periods ({type(exc).__name__}: {exc})."
        ) from None
    return StatSeries(t0, y, model)


def stat_forecast(
    stat: StatSeries,
    last: int,
    t_new: np.ndarray | None = None,
    y_new: np.ndarray | None = None,
) -> float:
    """The forecast of the period after ``last`` by a statistical segment's model: its
    stored series up to ``last``, with the values ``y_new`` of periods ``t_new`` (newer
    rows) replacing or extending it, filtered through the fitted model (NaN when every
    value is missing or ``last`` precedes the series)."""
    if last < stat.t0:
        return float("nan")
    if (t_new is None or not len(t_new)) and last == stat.end:
        y = stat.y
    else:
        y = np.full(last - stat.t0 + 1, np.nan)
        n = min(len(y), len(stat.y))
        y[:n] = stat.y[:n]
        if t_new is not None and len(t_new):
            t_new = np.asarray(t_new, dtype=np.int64)
            keep = (t_new >= stat.t0) & (t_new <= last)
            y[t_new[keep] - stat.t0] = np.asarray(y_new, dtype=np.float64)[keep]
    if np.isnan(y).all():
        return float("nan")
    return float(stat.model.one_step(y)[1])


def source_columns(params: Params) -> list[str]:
    """The columns of the source schema the forecasts read: the segment (``series`` for a
    single series), the time columns of ``problem.time``, the target and the exogenous."""
    p = params.problem
    cols = [p.segment_column, *p.time.columns, p.target]
    return cols + [c for c in params.features.exogenous if c not in cols]


def model_version(model_bytes: bytes) -> str:
    """The content hash that names a model file (sha256, first 16 hex digits)."""
    return hashlib.sha256(model_bytes).hexdigest()[:16]


def own_forecasts(
    rows: pd.DataFrame,
    point: np.ndarray,
    segs: SegmentDeployment,
    segment: str,
    new: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """``point`` with the rows of segments that have a model of their own forecast by it.

    ``rows`` are next-period feature rows (one per segment, period ``T``): a scikit-learn
    model reads its features there, a statistical one forecasts from its stored series
    and ``new[segment]`` (periods and target values of newer rows). A row whose level is
    unknown (no recent value) keeps no forecast, as with the global model.
    """
    if not segs.routed or not len(rows):
        return point
    point = np.array(point, dtype=np.float64, copy=True)
    names = rows[segment].astype(str).to_numpy()
    fam = segs.families(rows[segment])
    known = rows[LEVEL_FEATURE].notna().to_numpy()
    own = known & (fam == SKLEARN)
    for name in pd.unique(names[own]):
        mask = own & (names == name)
        model = segs.sklearn[name]
        point[mask] = model.predict(rows.loc[mask, list(model.feature_names_in_)])
    target_t = rows[T].to_numpy(dtype=np.int64)
    for i in np.flatnonzero(known & statistical_mask(fam)):
        t_new, y_new = (new or {}).get(names[i], (None, None))
        stat = stat_forecast(segs.stat[names[i]], int(target_t[i]) - 1, t_new, y_new)
        point[i] = blend(fam[i], point[i], stat)
    return point


def deploy_segments(
    router: Router | None,
    features: pd.DataFrame,
    fit_rows: pd.DataFrame,
    columns: list[str],
    refit: bool,
    deployed_sha256: str,
    params: Params,
) -> SegmentDeployment:
    """Deploy every segment's model (see the module docstring).

    ``fit_rows`` are the labelled rows the deployed models are fitted on (their last
    period is ``fit_end``); ``refit`` refits the scikit-learn models on their segment's
    rows of it. Without ``router`` every segment is routed to the global model.
    """
    problem = params.problem
    seg, cal = problem.segment_column, problem.calendar
    fit_end = int(fit_rows[T].max())
    if router is None:
        segments = sorted(features[seg].astype(str).unique())
        source, _ = global_manifest(segments, str(params.paths.deployed_model), "", None)
        own: dict[str, Any] = {}
    else:
        source, own = router.manifest, router.own_models
    entries = copy.deepcopy(source.get("models", []))
    own_columns = [c for c in columns if c != SEGMENT_FEATURE]
    needs_rows = refit and any(e["family"] == SKLEARN for e in entries)
    rows_of = fit_rows.groupby(seg, sort=False, observed=True).indices if needs_rows else {}
    files: dict[str, bytes] = {}
    sklearn_models: dict[str, Any] = {}
    stat_names: list[str] = []
    ends = {"fit_end": fit_end, "fit_end_period": cal.format(fit_end)}
    for position, entry in enumerate(entries):
        name, family = str(entry["segment"]), entry["family"]
        if family == GLOBAL:
            entry.update(file=str(params.paths.deployed_model), sha256=deployed_sha256)
        elif family == SKLEARN:
            model = own[name]
            if refit:
                if name not in rows_of:
                    raise DataError(
                        f"segment {name!r}: no labelled row to refit its scikit-learn model "
                        f"on (expected its rows up to {cal.format(fit_end)})."
                    )
                part = fit_rows.iloc[rows_of[name]]
                names = list(getattr(model, "feature_names_in_", own_columns))
                model = clone(model).fit(part[names], part[TARGET])
            data = dumps_model(model)
            file = segment_file(SKLEARN, position)
            files[file] = data
            entry.update(file=file, sha256=hashlib.sha256(data).hexdigest(), **ends)
            sklearn_models[name] = model
        elif is_statistical(family):
            entry.update(file=None, sha256=None, **ends)
            stat_names.append(name)
        else:
            raise DataError(
                f"{params.paths.segment_models}: segment {name!r} has the unknown family "
                f"{family!r}; expected one of {[GLOBAL, SKLEARN, *STAT_FAMILIES]} or a "
                f"combination of global and statistical ones such as 'global+theta'."
            )
    series = stat_series_frame(features, stat_names, seg)
    data = parquet_bytes(series)
    files[SERIES_FILE] = data
    stat_entries = {str(e["segment"]): e for e in entries if is_statistical(e["family"])}
    grids = series_grids(series, seg)
    lacking = [name for name in stat_names if name not in grids]
    if lacking:
        raise DataError(
            f"segment(s) {lacking[:5]}: no labelled period to refit their statistical model "
            f"on; expected at least one observed target."
        )
    stat = {name: fit_stat(stat_entries[name], *grids[name], cal.season_length) for name in grids}
    fam = pd.Series([e["family"] for e in entries], dtype=object).value_counts()
    manifest = {
        "strategy": source.get("strategy", GLOBAL),
        "segments": len(entries),
        "families": {str(k): int(v) for k, v in sorted(fam.items())},
        "global_cv_mae": source.get("global_cv_mae"),
        "refit": params.predict.refit,
        **ends,
        "series": {
            "file": SERIES_FILE,
            "sha256": hashlib.sha256(data).hexdigest(),
            "segments": len(stat_names),
            "rows": int(len(series)),
        },
        "models": entries,
    }
    return SegmentDeployment(manifest, files, sklearn_models, stat)


def stat_series_frame(features: pd.DataFrame, segments: list[str], seg: str) -> pd.DataFrame:
    """The series of the statistical ``segments`` (segment, ``t``, ``target``), each from
    its first labelled period to its last period, sorted by segment and period."""
    part = features.loc[features[seg].astype(str).isin(segments), [seg, T, TARGET]]
    part = part.astype({seg: str, T: np.int64, TARGET: np.float64})
    part = part.sort_values([seg, T], kind="stable").reset_index(drop=True)
    labelled = part[TARGET].notna()
    started = labelled.groupby(part[seg], sort=False).cummax()
    return part[started.to_numpy()].reset_index(drop=True)


def series_grids(series: pd.DataFrame, seg: str) -> dict[str, tuple[int, np.ndarray]]:
    """Every segment's series of ``series`` on a grid of periods (:func:`series_grid`)."""
    out = {}
    t = series[T].to_numpy(dtype=np.int64)
    y = series[TARGET].to_numpy(dtype=np.float64)
    for name, idx in series.groupby(seg, sort=True).indices.items():
        out[str(name)] = series_grid(t[idx], y[idx], str(name))
    return out


def deployed_version(model_bytes: bytes, manifest_text: str | None) -> str:
    """The deployment's version: the global model's :func:`model_version`, or, when some
    segment has a model of its own, the hash of the model and the deployed manifest."""
    if manifest_text is None:
        return model_version(model_bytes)
    return model_version(model_bytes + manifest_text.encode("utf-8"))


def interval_columns(levels: list[int]) -> list[str]:
    """``lower_80, upper_80, ...`` in level order."""
    return [f"{side}_{level}" for level in levels for side in ("lower", "upper")]


def point_forecasts(rows: pd.DataFrame, model: Any, columns: list[str]) -> np.ndarray:
    """``model``'s forecasts of next-period feature ``rows`` (missing where the segment
    has no recent value: its level is unknown)."""
    known = rows[LEVEL_FEATURE].notna().to_numpy()
    point = np.full(len(rows), np.nan)
    if known.any():
        point[known] = model.predict(rows.loc[known, columns])
    return point


def forecast_frame(
    rows: pd.DataFrame,
    model: Any,
    columns: list[str],
    offsets: dict[int, tuple[float, float]],
    segment: str,
    point: np.ndarray | None = None,
) -> pd.DataFrame:
    """Point forecasts (``model``'s, or ``point``) and intervals for next-period feature
    ``rows`` with history."""
    if point is None:
        point = point_forecasts(rows, model, columns)
    out = pd.DataFrame({segment: rows[segment].to_numpy(), PERIOD: rows[PERIOD].to_numpy()})
    out[FORECAST] = point
    for level, pair in offsets.items():
        lower, upper = interval(point, pair)
        out[f"lower_{level}"], out[f"upper_{level}"] = lower, upper
    return out


def deployed_offsets(
    cv_forecasts: pd.DataFrame | None, test_predictions: pd.DataFrame, params: Params
) -> tuple[dict[int, tuple[float, float]], dict]:
    """The interval offsets of the deployed forecasts, and what they were calibrated on.

    The residuals are the deployed choice's latest out-of-sample ones: its CV fold
    forecasts inside the training window (``cv_forecasts``), then its forecasts of the
    test window (``test_predictions``); the offsets are those of the last
    ``predict.calibration_periods`` periods of them (sliding-window split-conformal, as
    the evaluate stage measures it period by period). Too few residuals for a level: the
    widest bounds are the extreme residuals, with a warning.
    """
    spec, problem = params.predict, params.problem
    cal = problem.calendar
    first_test = cal.parse(params.windows.test_start)
    cv = cv_residuals(cv_forecasts, problem.segment_column, first_test, CV_FORECASTS)
    test = residual_table(
        test_predictions[T], test_predictions[TARGET], test_predictions[PREDICTION]
    )
    table = pd.concat([cv, test], ignore_index=True).sort_values(T, kind="stable")
    if table.empty:
        raise DataError(
            "the prediction intervals have no residual to calibrate on: no CV fold forecast "
            f"({CV_FORECASTS}) and no labelled test forecast; expected at least one."
        )
    levels = list(spec.interval_levels)
    try:
        offsets = latest_offsets(table, spec.calibration_periods, levels)
    except ValueError as exc:
        logger.warning("prediction intervals: %s; using the residuals there are", exc)
        offsets = latest_offsets(table, spec.calibration_periods, levels, minimum=1)
    last = int(table[T].max())
    first = last - spec.calibration_periods + 1
    used = table[table[T] >= first]
    logger.info(
        "intervals calibrated on the %d out-of-sample residuals of %s..%s",
        len(used),
        cal.format(int(used[T].min())),
        cal.format(last),
    )
    return offsets, {
        "method": "sliding-window split-conformal on log residuals (latest window)",
        "start": cal.format(int(used[T].min())),
        "end": cal.format(last),
        "residuals": int(len(used)),
    }


def predict(
    table: pd.DataFrame,
    features: pd.DataFrame,
    evaluated: Any,
    columns: list[str],
    test_predictions: pd.DataFrame,
    evaluation: dict,
    data_sha256: str,
    params: Params,
    router: Router | None = None,
    cv_forecasts: pd.DataFrame | None = None,
) -> Deployment:
    """Deploy, calibrate and forecast the period after the data for every segment.

    ``router`` holds the train stage's segment models (none: every segment is forecast
    by the global model); each segment is forecast by its deployed model. The intervals
    are calibrated on the latest out-of-sample residuals: the train stage's CV fold
    forecasts ``cv_forecasts`` and the evaluated forecasts of the test window
    (:func:`deployed_offsets`).
    """
    spec, problem = params.predict, params.problem
    seg, cal, unit = problem.segment_column, problem.calendar, problem.unit
    labelled = features[features[TARGET].notna()]
    train = labelled[labelled[WINDOW] == "train"]
    offsets, calibration = deployed_offsets(cv_forecasts, test_predictions, params)
    if spec.refit == "all":
        deployed = clone(evaluated).fit(labelled[columns], labelled[TARGET])
        fitted = labelled
    else:
        deployed, fitted = evaluated, train
    model_bytes = dumps_model(deployed)
    model_sha256 = hashlib.sha256(model_bytes).hexdigest()
    segs = deploy_segments(
        router, features, fitted, columns, spec.refit == "all", model_sha256, params
    )
    manifest_text = dumps_json(segs.manifest)
    version = deployed_version(model_bytes, manifest_text if segs.routed else None)
    categories = (
        [str(c) for c in features[SEGMENT_FEATURE].cat.categories]
        if SEGMENT_FEATURE in features.columns
        else None
    )
    table_t = period_of(table, problem)
    last = int(table_t.max())
    rows = next_period_features(table, problem, params.features, categories, until=last)
    point = own_forecasts(rows, point_forecasts(rows, deployed, columns), segs, seg)
    out = forecast_frame(rows, deployed, columns, offsets, seg, point=point)
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
        "sha256": model_sha256,
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
        "segment_models": {
            "strategy": segs.manifest["strategy"],
            "families": segs.manifest["families"],
            "directory": str(params.paths.deployed_segments),
            "manifest_sha256": hashlib.sha256(manifest_text.encode("utf-8")).hexdigest(),
        },
    }
    metrics = {
        "refit": spec.refit,
        "model_version": version,
        "forecast_period": cal.format(last + 1),
        "segments": int(len(out)),
        "segments_without_forecast": len(missing),
        "calibration": calibration,
        "total_forecast": round(float(np.nansum(out[FORECAST])), 3),
    }
    if segs.routed:
        metrics["segment_models"] = {
            "strategy": segs.manifest["strategy"],
            "families": segs.manifest["families"],
            "fit_end": segs.manifest["fit_end_period"],
        }
        logger.info(
            "%s: %d of %d segments forecast by their own model %s",
            segs.manifest["strategy"],
            len(segs.routes),
            segs.manifest["segments"],
            {k: v for k, v in segs.manifest["families"].items() if k != GLOBAL},
        )
    logger.info(
        "forecast of %s for %d segment(s): total %s",
        cal.format(last + 1),
        int(len(out)),
        with_unit(metrics["total_forecast"], unit, 1),
    )
    return Deployment(model_bytes, metadata, state, out, metrics, segs.manifest, segs.files)
