"""Stage drift: compare the current window with the training reference stored at train time."""

import pandas as pd

from panelcast.core.io import read_json, write_csv, write_json
from panelcast.core.stage import run_stage
from panelcast.modelling.model import load_model
from panelcast.modelling.routing import Router
from panelcast.pipeline.drift import drift


def main(params, args) -> None:
    paths = params.paths
    metadata = read_json(paths.model_metadata)
    cal = params.problem.calendar
    router = Router.load(
        paths.segment_models,
        load_model(paths.model, metadata, paths.model_metadata),
        cal.season_length,
        params.problem.segment_column,
        global_sha256=metadata.get("sha256"),
    )
    report, effects, by_segment = drift(
        pd.read_parquet(paths.features),
        router,
        list(metadata["features"]),
        read_json(paths.reference),
        params.drift,
        cal,
        train_end=cal.parse(params.windows.train_end),
        warmup=max(params.features.lags),  # as the reference's (train stage)
    )
    write_json(paths.metric("drift"), report)
    write_csv(paths.plot("drift_effects.csv"), effects)
    write_csv(paths.plot("drift_segments.csv"), by_segment)


if __name__ == "__main__":
    run_stage("drift", main)
