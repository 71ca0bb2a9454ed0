"""Stage baseline: the rule-based benchmarks, scored on the test window like the model."""

from __future__ import annotations

import logging

import pandas as pd

from ..core.config import Params
from ..modelling.evaluation import rule_predictions, score_rules

logger = logging.getLogger(__name__)


def baseline(
    table: pd.DataFrame, features: pd.DataFrame, params: Params
) -> tuple[pd.DataFrame, dict]:
    """Rule forecasts for every feature row, and the rules' scores on the test window."""
    rules = list(params.baseline.rules)
    preds, fallbacks = rule_predictions(table, features, params.problem, rules)
    result = score_rules(preds, rules, params.problem.metric, fallbacks)
    result["window"] = {"start": params.windows.test_start, "end": params.windows.test_end}
    unit = f" {params.problem.unit}" if params.problem.unit else ""
    for rule, s in result["rules"].items():
        logger.info("rule %-20s MAE %8.2f%s  WAPE %.4f", rule, s["mae"], unit, s["wape"])
    logger.info("best rule: %s", result["best_rule"])
    return preds, result
