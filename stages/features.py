"""Stage features: next-month target and past-only features, split by time."""

import pandas as pd

from panelcast.cli import run_stage
from panelcast.features import build_features
from panelcast.io import write_json, write_parquet


def main(params, args) -> None:
    table = pd.read_parquet("data/validated.parquet")
    frame, summary = build_features(table, params.problem, params.features, params.windows)
    write_parquet("data/features.parquet", frame)
    write_json("metrics/features.json", summary)


if __name__ == "__main__":
    run_stage("features", main)
