"""Stage backtest: replay production period by period and compare retraining policies."""

import pandas as pd

from panelcast.core.io import write_bytes, write_csv, write_json
from panelcast.core.stage import run_stage
from panelcast.pipeline.backtest import backtest


def main(params, args) -> None:
    paths = params.paths
    result = backtest(pd.read_parquet(paths.features), params)
    write_json(paths.metric("backtest"), result.metrics)
    for name, table in result.plots.items():
        write_csv(paths.plot(name), table)
    write_bytes(paths.plot("backtest.png"), result.figure_png)


if __name__ == "__main__":
    run_stage("backtest", main)
