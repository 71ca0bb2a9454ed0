"""Stage train: fit the model (with the time-ordered search), save it with skops,
its metadata, and the reference statistics the drift stage compares against."""

import pandas as pd

from panelcast.core.io import read_json, write_bytes, write_json
from panelcast.core.stage import run_stage
from panelcast.pipeline.train import train


def main(params, args) -> None:
    paths = params.paths
    data_sha256 = read_json(paths.metric("collect"))["source"]["sha256"]
    out = train(pd.read_parquet(paths.features), data_sha256, params)
    write_bytes(paths.model, out.model_bytes)
    write_json(paths.model_metadata, out.metadata)
    write_json(paths.reference, out.reference)
    write_json(paths.metric("train"), out.metrics)


if __name__ == "__main__":
    run_stage("train", main)
