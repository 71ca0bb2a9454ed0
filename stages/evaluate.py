"""Stage evaluate: score the model on the test window against the best rule; apply the gate."""

from pathlib import Path

import pandas as pd
import pyarrow.compute as pc

from panelcast.core.io import read_json, write_csv, write_json, write_parquet
from panelcast.core.periods import PERIOD, TARGET, WINDOW, T
from panelcast.core.stage import StageError, run_stage
from panelcast.modelling.features import read_rows
from panelcast.modelling.many import CV_FORECASTS
from panelcast.modelling.model import load_model
from panelcast.modelling.routing import Router
from panelcast.pipeline.evaluate import evaluate, only_global


def main(params, args) -> None:
    paths = params.paths
    metadata = read_json(paths.model_metadata)
    router = Router.load(
        paths.segment_models,
        load_model(paths.model, metadata, paths.model_metadata),
        params.problem.calendar.season_length,
        params.problem.segment_column,
        global_sha256=metadata.get("sha256"),
    )
    columns = list(metadata["features"])
    test = pc.field(WINDOW) == "test"
    # the test rows alone, unless a segment's own model reads its history
    meta = [params.problem.segment_column, PERIOD, T, WINDOW, TARGET]
    rows = test if only_global(router) else None
    features = read_rows(paths.features, meta + columns, rows, by=(WINDOW,))
    # the CV fold forecasts calibrate the test intervals (absent: calibrated on the test alone)
    cv_path = Path(paths.segment_models) / CV_FORECASTS
    cv_forecasts = pd.read_parquet(cv_path) if cv_path.is_file() else None
    result = evaluate(
        features,
        read_rows(paths.baseline, None, test, by=(WINDOW,)),
        read_json(paths.metric("baseline")),
        router,
        columns,
        params,
        str(paths.metric("baseline")),
        cv_forecasts,
    )
    del features
    # kept when the gate fails the stage: the scores say why
    write_json(paths.metric("evaluate"), result.metrics, keep_on_failure=True)
    write_parquet(paths.predictions, result.predictions)
    for name, table in result.plots.items():
        write_csv(paths.plot(name), table)
    if not result.passed and params.evaluate.fail_on_gate:
        failures = "; ".join(result.metrics["gate_failures"])
        raise StageError("the model does not meet the success gate: " + failures)


if __name__ == "__main__":
    run_stage("evaluate", main)
