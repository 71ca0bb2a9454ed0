"""Stage evaluate: score the model on the test window against the best rule; apply the gate.

The test forecasts also get prediction intervals, each period calibrated on the
out-of-sample residuals of the periods just before it (sliding-window split-conformal,
:func:`panelcast.modelling.intervals.rolling_offsets`): the CV fold forecasts of the
training window, then the test periods already known. Their coverage is reported per level.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import Params
from ..core.errors import DataError
from ..core.periods import PERIOD, PREDICTION, TARGET, WINDOW, T
from ..modelling.evaluation import gain_pct, gate, per_segment, score_rules
from ..modelling.features import predict_in_chunks
from ..modelling.intervals import (
    min_residuals,
    residual_table,
    rolling_bounds,
    rolling_coverage,
    rolling_offsets,
)
from ..modelling.many import CV_FORECASTS, GLOBAL
from ..modelling.metrics import scores
from ..modelling.model import with_unit
from ..modelling.routing import Router, route_summary

logger = logging.getLogger(__name__)

#: The forecast column of the train stage's CV fold forecasts (:data:`CV_FORECASTS` in
#: ``paths.segment_models``: the segment column, ``t``, ``target`` and this column).
CV_FORECAST = "forecast"
INTERVAL_METHOD = "sliding-window split-conformal on log residuals"


@dataclass(frozen=True)
class Evaluation:
    """Test-window predictions, the metrics and the plot tables of the evaluate stage."""

    predictions: pd.DataFrame
    metrics: dict
    plots: dict[str, pd.DataFrame]

    @property
    def passed(self) -> bool:
        return bool(self.metrics["gate_passed"])


def evaluate(
    features: pd.DataFrame,
    rules: pd.DataFrame,
    baseline: dict,
    model: Any,
    columns: list[str],
    params: Params,
    baseline_name: str = "metrics/baseline.json",
    cv_forecasts: pd.DataFrame | None = None,
) -> Evaluation:
    """Score ``model`` on the test rows of ``features`` beside the best rule of ``baseline``.

    ``model`` is the global model or a :class:`~panelcast.modelling.routing.Router` (each
    segment forecast by its own model, the statistical ones refitted on the training
    window); the scores are also given per segment, with the segments where the model
    loses to the best rule named. The test forecasts get prediction intervals calibrated
    on ``cv_forecasts`` (the train stage's :data:`CV_FORECASTS`; none: on the test
    residuals alone) and the test periods before each (:func:`calibrated_intervals`).
    """
    seg, metric = params.problem.segment_column, params.problem.metric
    missing = [k for k in ("best_rule", "best") if k not in baseline]
    if missing:
        raise DataError(
            f"{baseline_name}: missing key(s) {missing} (edited by hand?); restore it "
            f"with `git checkout -- {baseline_name}` or rerun `dvc repro baseline`."
        )
    is_test = (features[WINDOW] == "test").to_numpy()
    test = _rows(features, is_test)
    test_rules = _rows(rules, (rules[WINDOW] == "test").to_numpy())
    if len(test) != len(test_rules) or not (test[T].to_numpy() == test_rules[T].to_numpy()).all():
        raise DataError(
            "the rule forecasts and the feature table hold different test rows; "
            "rerun `dvc repro` so both come from the same data."
        )
    best_rule, rule_scores = checked_rule_scores(rules, baseline, metric, baseline_name)
    out = test[[seg, PERIOD, T, TARGET]].copy()
    if isinstance(model, Router) and not only_global(model):
        fit_end = params.problem.calendar.parse(params.windows.train_end)
        out[PREDICTION] = model.predict(features, columns, is_test, fit_end)
    else:  # every row forecast on its own by one model: in chunks of rows
        one = model.global_model if isinstance(model, Router) else model
        out[PREDICTION] = predict_in_chunks(one, test, columns)
    out[best_rule] = test_rules[best_rule].to_numpy()
    bounds, intervals, over_time = calibrated_intervals(out, cv_forecasts, params)
    for column in bounds.columns:
        out[column] = bounds[column].to_numpy()
    model_scores = scores(out[TARGET], out[PREDICTION])
    gain = gain_pct(model_scores[metric], rule_scores[metric])
    passed, reasons = gate(model_scores, gain, params.evaluate.gate)
    by_seg = per_segment(out, seg, PREDICTION, best_rule)
    if isinstance(model, Router):
        by_seg.insert(1, "family", model.families(by_seg[seg]))
    losing = by_seg.loc[by_seg["mae"] > by_seg["rule_mae"], seg].astype(str).tolist()
    result = {
        "window": {"start": params.windows.test_start, "end": params.windows.test_end},
        "metric": metric,
        "model": model_scores,
        "best_rule": {"name": best_rule, **rule_scores},
        "gain_pct": round(gain, 4),
        "gate": {
            "max_wape": params.evaluate.gate.max_wape,
            "min_gain_pct": params.evaluate.gate.min_gain_pct,
        },
        "gate_passed": passed,
        "gate_failures": reasons,
        "segments_model_better": int((by_seg["mae"] < by_seg["rule_mae"]).sum()),
        "segments": int(len(by_seg)),
        # the segments where the best rule beats the model (worth a look, or a rule there)
        "segments_losing_to_rule": losing,
        "per_segment": by_seg.round(4).to_dict(orient="records"),
        "intervals": intervals,
    }
    if isinstance(model, Router):
        result["strategy"] = model.strategy
        result["models_by_family"] = route_summary(model)
    unit = params.problem.unit if metric in UNIT_METRICS else None
    logger.info(
        "%s: model %s %s vs best rule %s %s: gain %.2f%%; gate %s",
        params.problem.label,
        metric,
        with_unit(model_scores[metric], unit, 3),
        best_rule,
        with_unit(rule_scores[metric], unit, 3),
        gain,
        "passed" if passed else "FAILED: " + "; ".join(reasons),
    )
    if losing:
        logger.info(
            "%d of %d segments lose to the best rule on the test window: %s%s",
            len(losing),
            len(by_seg),
            ", ".join(losing[:10]),
            ", ..." if len(losing) > 10 else "",
        )
    plots = plot_tables(out, by_seg, seg, best_rule)
    plots["intervals_over_time.csv"] = over_time
    return Evaluation(out, result, plots)


def cv_residuals(
    cv_forecasts: pd.DataFrame | None, seg: str, first_test: int, name: str
) -> pd.DataFrame:
    """The residual table of the CV fold forecasts (empty when there are none), refused
    when a column is missing, a row is repeated or reaches into the test window."""
    if cv_forecasts is None:
        logger.warning(
            "no CV fold forecasts (%s): the test-window intervals are calibrated on the "
            "test residuals alone, so the first test periods have none",
            name,
        )
        return residual_table(np.array([]), np.array([]), np.array([]))
    need = [seg, T, TARGET, CV_FORECAST]
    missing = [c for c in need if c not in cv_forecasts.columns]
    if missing:
        raise DataError(
            f"{name}: missing column(s) {missing}, expected {need} (found "
            f"{list(cv_forecasts.columns)}); rerun `dvc repro train`."
        )
    repeated = int(cv_forecasts.duplicated([seg, T]).sum())
    late = int((cv_forecasts[T] >= first_test).sum())
    if repeated or late:
        raise DataError(
            f"{name}: {repeated} repeated ({seg}, {T}) row(s) and {late} row(s) at or after "
            f"the first test period (t = {first_test}); the CV folds must forecast each "
            "training period once; rerun `dvc repro train`."
        )
    table = residual_table(cv_forecasts[T], cv_forecasts[TARGET], cv_forecasts[CV_FORECAST])
    if len(table) < len(cv_forecasts):
        logger.info(
            "%s: %d of %d rows have no residual (target or forecast missing)",
            name,
            len(cv_forecasts) - len(table),
            len(cv_forecasts),
        )
    return table


def calibrated_intervals(
    out: pd.DataFrame, cv_forecasts: pd.DataFrame | None, params: Params
) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Interval bounds of the test forecasts ``out``, their metrics section and the
    coverage per period (plot data).

    Each test period is calibrated on the residuals of the ``predict.calibration_periods``
    periods before it: the CV fold forecasts, then the test periods already known; a
    period with fewer than :func:`~panelcast.modelling.intervals.min_residuals` for a level
    gets no interval at that level and is not counted in its coverage.
    """
    spec, problem = params.predict, params.problem
    levels, window = list(spec.interval_levels), spec.calibration_periods
    name = f"{params.paths.segment_models}/{CV_FORECASTS}"
    t = out[T].to_numpy(dtype=np.int64)
    cv = cv_residuals(cv_forecasts, problem.segment_column, int(t.min()), name)
    test = residual_table(t, out[TARGET], out[PREDICTION])
    table = pd.concat([cv, test], ignore_index=True)
    offsets = rolling_offsets(table, np.unique(t), window, levels)
    bounds = rolling_bounds(out[PREDICTION], t, offsets, levels)
    levels_report = rolling_coverage(out[TARGET], out[PREDICTION], t, offsets, levels)
    section = {
        "method": INTERVAL_METHOD,
        "calibration_periods": window,
        "min_residuals": {str(level): min_residuals([level]) for level in levels},
        "residuals": {"cv": len(cv), "test": len(test)},
        "test_periods": int(len(np.unique(t))),
        "calibrated_periods": {
            str(level): sum(level in pairs for pairs in offsets.values()) for level in levels
        },
        "levels": levels_report,
    }
    unit = problem.unit
    for level, got in levels_report.items():
        log = logger.info if got["within_target"] else logger.warning
        log(
            "%s%% intervals: coverage %s on %d test rows (nominal %s%%, target +/- %g "
            "points: %s), mean width %s; %d row(s) without calibration",
            level,
            "-" if got["coverage"] is None else f"{100 * got['coverage']:.1f}%",
            got["n"],
            level,
            got["target_points"],
            "met" if got["within_target"] else "MISSED",
            with_unit(got["mean_width"], unit, 1),
            got["uncalibrated"],
        )
    return bounds, section, coverage_over_time(out, bounds, levels)


def coverage_over_time(out: pd.DataFrame, bounds: pd.DataFrame, levels: list[int]) -> pd.DataFrame:
    """Per period with an interval: the rows with an actual value (``n``) and the share
    of them inside each level's interval (empty where the level has no interval)."""
    actual = out[TARGET].to_numpy(dtype=float)
    known = np.isfinite(actual)
    frame = pd.DataFrame({"period": out[PERIOD].to_numpy(), "n": known.astype(np.int64)})
    for level in levels:
        lower, upper = bounds[f"lower_{level}"].to_numpy(), bounds[f"upper_{level}"].to_numpy()
        inside = ((actual >= lower) & (actual <= upper)).astype(float)
        frame[f"coverage_{level}"] = np.where(known & np.isfinite(lower), inside, np.nan)
    frame = frame[bounds.notna().any(axis=1).to_numpy()]
    grouped = frame.groupby("period", sort=True)
    table = grouped[[f"coverage_{level}" for level in levels]].mean().round(4)
    table.insert(0, "n", grouped["n"].sum())
    return table.reset_index()


def only_global(router: Router) -> bool:
    """True when the router sends every segment to the global model (strategy global, or
    no segment won by its own model): the test rows alone can then be forecast."""
    return all(str(e.get("family", GLOBAL)) == GLOBAL for e in router.manifest.get("models", []))


def _rows(frame: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    """``frame[mask]`` with a fresh RangeIndex; ``frame`` itself when it is just that."""
    if mask.all() and frame.index.equals(pd.RangeIndex(len(frame))):
        return frame
    return frame[mask].reset_index(drop=True)


SCORE_KEYS = ("n", "mae", "rmse", "wape", "r2")
#: The metrics in the target's unit (``problem.unit``); WAPE and R² have none.
UNIT_METRICS = ("mae", "rmse")


def checked_rule_scores(
    rules: pd.DataFrame, baseline: dict, metric: str, baseline_name: str
) -> tuple[str, dict]:
    """The best rule and its scores, recomputed from the rule forecasts themselves.

    ``baseline`` (the baseline stage's metrics file) must agree with the recomputation:
    a score or a best rule edited by hand would otherwise change the gain the gate reads.
    """
    names = list(baseline.get("rules", {}))
    absent = [name for name in names if name not in rules.columns]
    if not names or absent:
        raise DataError(
            f"{baseline_name}: rules {absent or names} have no forecasts in the rule table "
            f"(the two files come from different runs?); rerun `dvc repro baseline`."
        )
    fallbacks = {name: baseline["rules"][name].get("fallbacks", 0) for name in names}
    again = score_rules(rules, names, metric, fallbacks)
    differ = [
        f"{name}.{key}: {baseline['rules'][name].get(key)!r} recorded, "
        f"{again['rules'][name][key]!r} recomputed"
        for name in names
        for key in SCORE_KEYS
        if baseline["rules"][name].get(key) != again["rules"][name][key]
    ]
    if baseline["best_rule"] != again["best_rule"]:
        differ.insert(
            0, f"best_rule: {baseline['best_rule']!r} recorded, {again['best_rule']!r} recomputed"
        )
    if differ:
        raise DataError(
            f"{baseline_name}: the rule scores do not match the rule forecasts they were "
            f"computed from ({'; '.join(differ[:3])}): edited by hand? restore it with "
            f"`git checkout -- {baseline_name}` or rerun `dvc repro baseline`."
        )
    best = again["best_rule"]
    return best, {k: again["rules"][best][k] for k in SCORE_KEYS}


def plot_tables(
    out: pd.DataFrame, by_seg: pd.DataFrame, seg: str, best_rule: str
) -> dict[str, pd.DataFrame]:
    """The evaluate stage's plot data, by file name."""
    scored = out[out[TARGET].notna()]
    predicted = pd.DataFrame(
        {
            seg: scored[seg],
            "period": scored[PERIOD],
            "actual": scored[TARGET],
            "predicted": scored[PREDICTION].round(3),
        }
    )
    err = scored.assign(
        model_mae=(scored[PREDICTION] - scored[TARGET]).abs(),
        rule_mae=(scored[best_rule] - scored[TARGET]).abs(),
    )
    per_period = err.groupby(PERIOD, sort=True)[["model_mae", "rule_mae"]].mean().round(3)
    per_seg = by_seg.rename(columns={seg: "segment", "mae": "model_mae"})
    shown = ["segment", *(["family"] if "family" in per_seg else []), "model_mae", "rule_mae"]
    return {
        "predicted_vs_actual.csv": predicted,
        "error_over_time.csv": per_period.reset_index(),
        "error_by_segment.csv": per_seg[shown].round(3).sort_values("model_mae", ascending=False),
    }
