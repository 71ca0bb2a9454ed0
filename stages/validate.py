"""Stage validate: check the snapshot against the data contract, prepare the panel (params
``prepare``), check its completeness; refuse the snapshot on any error. Then check the
params against the prepared panel (windows, lags, folds, hold-outs: one line per key)."""

import pandas as pd

from panelcast.core.io import write_json, write_parquet
from panelcast.core.stage import run_stage
from panelcast.data.contract import load_contract
from panelcast.pipeline.check_data import check_data
from panelcast.pipeline.validate import refusal, validate


def main(params, args) -> None:
    paths = params.paths
    problem = params.problem
    contract = load_contract(paths.contract, calendar=problem.calendar)
    frame = pd.read_parquet(paths.snapshot)
    table, result, text = validate(
        frame, contract, problem, params.prepare, paths.snapshot, paths.contract
    )
    if table is None:
        write_json(paths.metric("validate"), result, keep_on_failure=True)  # the refusal
        raise refusal(result, text, paths.snapshot, paths.contract)
    result["params_fit"] = check_data(params, table)
    write_json(paths.metric("validate"), result)
    write_parquet(paths.validated, table)


if __name__ == "__main__":
    run_stage("validate", main)
