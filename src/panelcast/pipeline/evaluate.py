"""Stage evaluate: score the model on the test window against the best rule; apply the gate."""

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
from ..modelling.many import GLOBAL
from ..modelling.metrics import scores
from ..modelling.model import with_unit
from ..modelling.routing import Router, route_summary

logger = logging.getLogger(__name__)


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
) -> Evaluation:
    """Score ``model`` on the test rows of ``features`` beside the best rule of ``baseline``.

    ``model`` is the global model or a :class:`~panelcast.modelling.routing.Router` (each
    segment forecast by its own model, the statistical ones refitted on the training
    window); the scores are also given per segment, with the segments where the model
    loses to the best rule named.
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
    return Evaluation(out, result, plot_tables(out, by_seg, seg, best_rule))


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
