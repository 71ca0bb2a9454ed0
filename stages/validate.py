"""Stage validate: check the snapshot against the data contract, prepare the panel (params
``prepare``), check its completeness; refuse the snapshot on any error."""

import pandas as pd

from panelcast.core.io import write_json, write_parquet
from panelcast.core.stage import run_stage
from panelcast.data.contract import load_contract
from panelcast.pipeline.validate import refusal, validate


def main(params, args) -> None:
    paths = params.paths
    problem = params.problem
    contract = load_contract(paths.contract, calendar=problem.calendar)
    frame = pd.read_parquet(paths.snapshot)
    table, result, text = validate(
        frame, contract, problem, params.prepare, paths.snapshot, paths.contract
    )
    write_json(paths.metric("validate"), result, keep_on_failure=True)  # the refusal, too
    if table is None:
        raise refusal(result, text, paths.snapshot, paths.contract)
    write_parquet(paths.validated, table)


if __name__ == "__main__":
    run_stage("validate", main)
