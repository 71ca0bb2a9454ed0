"""Stage predict: deploy the model (refit on every labelled period by default) and each
segment's own model (``train.strategy`` per_segment or best_of), and forecast the period
after the data for every segment, with prediction intervals.

The interval offsets are calibrated on the latest out-of-sample residuals of the deployed
choice: the train stage's CV fold forecasts, then the evaluated test-window forecasts.
"""

from pathlib import Path

import pandas as pd

from panelcast.core.io import read_json, write_bytes, write_csv, write_json, write_parquet
from panelcast.core.stage import run_stage
from panelcast.modelling.many import CV_FORECASTS
from panelcast.modelling.model import load_model
from panelcast.modelling.routing import Router, write_model_dir
from panelcast.pipeline.predict import FORECAST, predict


def main(params, args) -> None:
    paths = params.paths
    metadata = read_json(paths.model_metadata)
    evaluated = load_model(paths.model, metadata, paths.model_metadata)
    cv_path = Path(paths.segment_models) / CV_FORECASTS
    router = Router.load(
        paths.segment_models,
        evaluated,
        params.problem.calendar.season_length,
        params.problem.segment_column,
        global_sha256=metadata["sha256"],
    )
    out = predict(
        pd.read_parquet(paths.validated),
        pd.read_parquet(paths.features),
        evaluated,
        list(metadata["features"]),
        pd.read_parquet(paths.predictions),
        read_json(paths.metric("evaluate")),
        read_json(paths.metric("collect"))["source"]["sha256"],
        params,
        router=router,
        cv_forecasts=pd.read_parquet(cv_path) if cv_path.is_file() else None,
    )
    write_bytes(paths.deployed_model, out.model_bytes)
    write_model_dir(paths.deployed_segments, out.segment_manifest, out.segment_files)
    write_json(paths.deployed_metadata, out.metadata)
    write_parquet(paths.serving_state, out.serving_state)
    write_parquet(paths.forecasts, out.forecasts)
    write_json(paths.metric("predict"), out.metrics)
    table = out.forecasts.drop(columns=["data_sha256"]).sort_values(FORECAST, ascending=False)
    write_csv(paths.plot("forecasts.csv"), table.round(1))


if __name__ == "__main__":
    run_stage("predict", main)
