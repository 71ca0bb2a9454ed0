"""Scoring forecasts on the test window, the gain over the rules, and the success gate."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..core.config import GateSpec, ProblemSpec
from ..core.periods import TARGET, WINDOW, T
from .features import grid_of
from .metrics import scores, scores_by
from .rules import RULES, GridRows, check_rules, rule_forecasts

logger = logging.getLogger(__name__)


def rule_predictions(
    table: pd.DataFrame, features: pd.DataFrame, problem: ProblemSpec, rules: list[str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rule forecasts for every row of the feature table, and fallbacks counted on the test rows.

    ``features`` needs the segment, period index, window and target columns only. The rules
    run on the grid of ``table`` as arrays; each feature row takes the forecasts of its
    grid row (missing for a row that is not in the grid).
    """
    seg = problem.segment_column
    check_rules(rules)
    grid = grid_of(table, problem, [])
    window = features[WINDOW].to_numpy()
    train_t = features[T].to_numpy()[window == "train"]
    train_mask = (grid.t >= int(train_t.min())) & (grid.t <= int(train_t.max()))
    rows = GridRows(grid.codes(), grid.t, grid.values.pop("y"), train_mask)
    forecasts, fell_back = rule_forecasts(rows, problem.calendar.season_length, rules)
    del rows, train_mask
    at = grid.position(features[seg], features[T].to_numpy())
    found = at >= 0
    test = (window == "test") & found
    counts = {r: int(fell_back[r][at[test]].sum()) for r in rules}
    del fell_back
    block = np.empty((len(rules) + 1, len(features)))
    for dest, rule in zip(block, rules, strict=False):
        np.take(forecasts.pop(rule), at, out=dest)
        dest[~found] = np.nan
    block[-1] = features[TARGET].to_numpy()
    out = pd.DataFrame(block.T, columns=[*rules, TARGET], copy=False)
    out.insert(0, seg, features[seg].to_numpy())
    out.insert(1, T, features[T].to_numpy())
    out.insert(2, WINDOW, window)
    return out, counts


def score_rules(
    preds: pd.DataFrame, rules: list[str], metric: str, fallbacks: dict[str, int]
) -> dict:
    """Scores of each rule on the test window and the best one by ``metric``."""
    test = preds[preds[WINDOW] == "test"]
    table = {}
    for rule in rules:
        table[rule] = {
            "description": RULES[rule],
            **scores(test[TARGET], test[rule]),
            "fallbacks": fallbacks[rule],
        }
    best = min(rules, key=lambda r: table[r][metric])
    return {"metric": metric, "rules": table, "best_rule": best, "best": table[best]}


def gain_pct(model_score: float, rule_score: float) -> float:
    """Percent of the rule's error removed by the model (positive is better)."""
    return 100.0 * (rule_score - model_score) / rule_score if rule_score else 0.0


def gate(model: dict, gain: float, spec: GateSpec) -> tuple[bool, list[str]]:
    """Check the success criteria; return the verdict and the reasons it failed."""
    reasons = []
    if model["wape"] is None or model["wape"] > spec.max_wape:
        reasons.append(f"WAPE {model['wape']} above the gate's max_wape {spec.max_wape}")
    if gain < spec.min_gain_pct:
        reasons.append(
            f"gain over the best rule {gain:.2f}% below min_gain_pct {spec.min_gain_pct}%"
        )
    return not reasons, reasons


def per_segment(frame: pd.DataFrame, seg: str, pred: str, best_rule: str) -> pd.DataFrame:
    """Per-segment model and best-rule MAE side by side."""
    model = scores_by(frame, seg, TARGET, pred)[[seg, "n", "mae", "wape"]]
    rule = scores_by(frame, seg, TARGET, best_rule)[[seg, "mae"]].rename(
        columns={"mae": "rule_mae"}
    )
    return model.merge(rule, on=seg)
