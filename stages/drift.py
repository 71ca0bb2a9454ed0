"""Stage drift: compare the current window with the training reference stored at train time."""

import pandas as pd

from panelcast.core.io import read_json, write_csv, write_json
from panelcast.core.stage import run_stage
from panelcast.modelling.model import load_model
from panelcast.pipeline.drift import drift


def main(params, args) -> None:
    paths = params.paths
    metadata = read_json(paths.model_metadata)
    report, effects = drift(
        pd.read_parquet(paths.features),
        load_model(paths.model, metadata, paths.model_metadata),
        list(metadata["features"]),
        read_json(paths.reference),
        params.drift,
        params.problem.calendar,
    )
    write_json(paths.metric("drift"), report)
    write_csv(paths.plot("drift_effects.csv"), effects)


if __name__ == "__main__":
    run_stage("drift", main)
