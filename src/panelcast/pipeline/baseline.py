"""Stage baseline: the rule-based benchmarks, scored on the test window like the model, and
the per-segment statistical models (``baseline.statistical``) scored beside them."""

from __future__ import annotations

import logging

import pandas as pd

from ..core.config import Params
from ..core.periods import TARGET
from ..modelling.evaluation import rule_predictions, score_rules
from ..modelling.references import reference_forecasts, score_references

logger = logging.getLogger(__name__)

#: The rule whose forecast replaces a statistical model's where it has none.
FALLBACK_RULE = "seasonal_naive"


def baseline(
    table: pd.DataFrame, features: pd.DataFrame, params: Params
) -> tuple[pd.DataFrame, dict]:
    """Rule forecasts for every feature row, and the rules' scores on the test window.

    With ``baseline.statistical``, each statistical family's forecasts of the test rows
    are a column too (missing on the other rows) and its scores are under
    ``"statistical"``, with ``"best_statistical"``; ``"best_rule"`` and ``"best"`` are
    chosen among the rules only.
    """
    problem = params.problem
    rules = list(params.baseline.rules)
    preds, fallbacks = rule_predictions(table, features, problem, rules)
    result = score_rules(preds, rules, problem.metric, fallbacks)
    result["window"] = {"start": params.windows.test_start, "end": params.windows.test_end}
    unit = f" {problem.unit}" if problem.unit else ""
    for rule, s in result["rules"].items():
        logger.info("rule %-20s MAE %8.2f%s  WAPE %.4f", rule, s["mae"], unit, s["wape"])
    logger.info("best rule: %s", result["best_rule"])
    families = list(params.baseline.statistical)
    if not families:
        return preds, result
    if FALLBACK_RULE in rules:
        fallback = preds[FALLBACK_RULE].to_numpy()
    else:
        fallback = rule_predictions(table, features, problem, [FALLBACK_RULE])[0][FALLBACK_RULE]
        fallback = fallback.to_numpy()
    # the references are the stock forecasters: AutoETS searches its whole space (ZZZ)
    refs = reference_forecasts(table, features, problem, families, fallback)
    at = preds.columns.get_loc(TARGET)
    for i, family in enumerate(families):
        preds.insert(at + i, family, refs.forecasts[family])
    result.update(score_references(preds, families, problem.metric, refs.fallbacks))
    for family, s in result["statistical"].items():
        logger.info(
            "statistical %-13s MAE %8.2f%s  WAPE %.4f  (%d fallbacks, %.1f s of CPU)",
            family,
            s["mae"],
            unit,
            s["wape"],
            s["fallbacks"],
            refs.cpu_s[family],
        )
    logger.info("best statistical model: %s (a reference, not a rule)", result["best_statistical"])
    return preds, result
