"""Stage predict: deploy the model (refit on every labelled period by default) and forecast
the period after the data for every segment, with calibrated prediction intervals."""

import pandas as pd

from panelcast.core.io import read_json, write_bytes, write_csv, write_json, write_parquet
from panelcast.core.stage import run_stage
from panelcast.modelling.model import load_model
from panelcast.pipeline.predict import FORECAST, predict


def main(params, args) -> None:
    paths = params.paths
    metadata = read_json(paths.model_metadata)
    out = predict(
        pd.read_parquet(paths.validated),
        pd.read_parquet(paths.features),
        load_model(paths.model, metadata, paths.model_metadata),
        list(metadata["features"]),
        pd.read_parquet(paths.predictions),
        read_json(paths.metric("evaluate")),
        read_json(paths.metric("collect"))["source"]["sha256"],
        params,
    )
    write_bytes(paths.deployed_model, out.model_bytes)
    write_json(paths.deployed_metadata, out.metadata)
    write_parquet(paths.serving_state, out.serving_state)
    write_parquet(paths.forecasts, out.forecasts)
    write_json(paths.metric("predict"), out.metrics)
    table = out.forecasts.drop(columns=["data_sha256"]).sort_values(FORECAST, ascending=False)
    write_csv(paths.plot("forecasts.csv"), table.round(1))


if __name__ == "__main__":
    run_stage("predict", main)
