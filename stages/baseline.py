"""Stage baseline: the rule-based benchmarks, scored on the test window like the model."""

import logging

import pandas as pd

from panelcast.cli import run_stage
from panelcast.evaluation import rule_predictions, score_rules
from panelcast.io import write_json, write_parquet

logger = logging.getLogger("panelcast.stages.baseline")


def main(params, args) -> None:
    table = pd.read_parquet("data/validated.parquet")
    features = pd.read_parquet("data/features.parquet")
    rules = list(params.baseline.rules)
    preds, fallbacks = rule_predictions(table, features, params.problem, rules)
    result = score_rules(preds, rules, params.problem.metric, fallbacks)
    result["window"] = {"start": params.windows.test_start, "end": params.windows.test_end}
    write_parquet("data/baseline.parquet", preds)
    write_json("metrics/baseline.json", result)
    for rule, s in result["rules"].items():
        logger.info("rule %-20s MAE %8.2f  WAPE %.4f", rule, s["mae"], s["wape"])
    logger.info("best rule: %s", result["best_rule"])


if __name__ == "__main__":
    run_stage("baseline", main)
