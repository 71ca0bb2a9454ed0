"""Scoring forecasts on the test window, the gain over the rules, and the success gate."""

from __future__ import annotations

import logging

import pandas as pd

from ..core.config import GateSpec, ProblemSpec
from ..core.periods import TARGET, WINDOW, T
from .features import panel
from .metrics import scores, scores_by
from .rules import RULES, predict_rules

logger = logging.getLogger(__name__)


def rule_predictions(
    table: pd.DataFrame, features: pd.DataFrame, problem: ProblemSpec, rules: list[str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rule forecasts for every row of the feature table, and fallbacks counted on the test rows."""
    seg = problem.segment_column
    grid, _ = panel(table, problem, [])
    keys = features[[seg, T, WINDOW]]
    train_t = features.loc[features[WINDOW] == "train", T]
    train_mask = grid[T].between(int(train_t.min()), int(train_t.max()))
    preds, fell_back = predict_rules(grid, problem, rules, train_mask)
    preds = preds.join(fell_back.add_suffix("__fallback"))
    merged = keys.merge(preds, on=[seg, T], how="left", validate="one_to_one")
    test = merged[WINDOW] == "test"
    counts = {r: int(merged.loc[test, f"{r}__fallback"].sum()) for r in rules}
    out = merged[[seg, T, WINDOW, *rules]].copy()
    out[TARGET] = features[TARGET].to_numpy()
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
