"""Stage drift: compare the current window with the training reference stored at train time."""

import logging

import pandas as pd

from panelcast.cli import StageError, run_stage
from panelcast.config import parse_month
from panelcast.drift import compare
from panelcast.features import T
from panelcast.io import read_json, write_csv, write_json
from panelcast.model import load_model
from panelcast.monitoring import drift_thresholds, monitored_frame

logger = logging.getLogger("panelcast.stages.drift")
MODEL = "models/model.skops"


def main(params, args) -> None:
    d = params.drift
    features = pd.read_parquet("data/features.parquet")
    start, end = (
        parse_month(d.current_start, "drift.current_start"),
        parse_month(d.current_end, "drift.current_end"),
    )
    current = features[features[T].between(start, end)].reset_index(drop=True)
    if current.empty:
        raise StageError(
            f"the drift window {d.current_start}..{d.current_end} holds no rows of "
            f"data/features.parquet (which spans "
            f"{features['period'].min()}..{features['period'].max()})."
        )
    model = load_model(MODEL)
    cols = list(read_json("models/metadata.json")["features"])
    frame, _, _ = monitored_frame(current, cols, model.predict(current[cols]))
    report = compare(read_json("models/reference.json"), frame, drift_thresholds(d))
    report = {"window": {"start": d.current_start, "end": d.current_end}, **report}
    write_json("metrics/drift.json", report)
    rows = [
        {
            "column": name,
            "effect": c["effect"],
            "missing_effect": c["missing_effect"],
            "drifted": c["drifted"],
        }
        for name, c in report["columns"].items()
    ]
    write_csv("plots/drift_effects.csv", pd.DataFrame(rows))
    verdict = "RETRAIN recommended" if report["drifted"] else "no retraining needed"
    logger.info("drift %s..%s: %s", d.current_start, d.current_end, verdict)
    for reason in report["reasons"]:
        logger.info("  %s", reason)


if __name__ == "__main__":
    run_stage("drift", main)
