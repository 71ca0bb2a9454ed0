"""Stage backtest: replay production period by period and compare retraining policies."""

from pathlib import Path

import pandas as pd

from panelcast.core.io import read_json, write_bytes, write_csv, write_json
from panelcast.core.stage import run_stage
from panelcast.modelling.routing import MANIFEST
from panelcast.pipeline.backtest import backtest, deployed_selection

#: Per policy, the CPU seconds of the fits it used (gitignored, not a DVC output).
COSTS = Path("logs") / "backtest_costs.json"


def main(params, args) -> None:
    paths = params.paths
    # the selection the train stage deployed: hyperparameters, encoding, segment families
    files = (
        str(paths.metric("train")),
        str(paths.model_metadata),
        str(Path(paths.segment_models) / MANIFEST),
    )
    selection = deployed_selection(*(read_json(f) for f in files), names=files)
    result = backtest(pd.read_parquet(paths.features), params, selection)
    write_json(paths.metric("backtest"), result.metrics)
    for name, table in result.plots.items():
        write_csv(paths.plot(name), table)
    write_bytes(paths.plot("backtest.png"), result.figure_png)
    # CPU seconds are a measurement: outside the DVC outputs, which are byte-reproducible
    write_json(COSTS, result.costs)


if __name__ == "__main__":
    run_stage("backtest", main)
