"""Stage baseline: the rule-based benchmarks, scored on the test window like the model."""

import pandas as pd

from panelcast.core.io import write_json, write_parquet
from panelcast.core.stage import run_stage
from panelcast.pipeline.baseline import baseline


def main(params, args) -> None:
    paths = params.paths
    preds, result = baseline(
        pd.read_parquet(paths.validated), pd.read_parquet(paths.features), params
    )
    write_parquet(paths.baseline, preds)
    write_json(paths.metric("baseline"), result)


if __name__ == "__main__":
    run_stage("baseline", main)
