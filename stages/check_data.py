"""Stage check_data: the params checked against the prepared panel (windows, lags, folds,
hold-outs inside the data), before any feature is built or model fitted."""

import pandas as pd

from panelcast.core.io import write_json
from panelcast.core.stage import run_stage
from panelcast.pipeline.check_data import check_data


def main(params, args) -> None:
    panel = pd.read_parquet(params.paths.validated)
    write_json(params.paths.metric("params_fit"), check_data(params, panel))


if __name__ == "__main__":
    run_stage("check_data", main)
