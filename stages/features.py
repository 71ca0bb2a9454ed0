"""Stage features: next-month target and past-only features, split by time."""

import pandas as pd

from panelcast.core.io import write_json, write_parquet
from panelcast.core.stage import run_stage
from panelcast.modelling.features import build_features, input_columns


def main(params, args) -> None:
    columns = input_columns(params.problem, params.features)
    table = pd.read_parquet(params.paths.validated, columns=columns)
    frame, summary = build_features(table, params.problem, params.features, params.windows)
    del table
    write_parquet(params.paths.features, frame)
    write_json(params.paths.metric("features"), summary)


if __name__ == "__main__":
    run_stage("features", main)
