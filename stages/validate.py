"""Stage validate: check the snapshot against the data contract; refuse it on any error."""

import logging

import pandas as pd

from panelcast.cli import StageError, run_stage
from panelcast.contract import check, format_failures, load_contract, report
from panelcast.io import write_json, write_parquet

logger = logging.getLogger("panelcast.stages.validate")


def main(params, args) -> None:
    src, problem = params.source, params.problem
    contract = load_contract(src.contract)
    frame = pd.read_parquet(src.snapshot)
    failures = check(frame, contract, (problem.time.year_column, problem.time.month_column))
    result = report(failures, src.snapshot, src.contract, len(frame))
    write_json("metrics/validate.json", result)
    text = format_failures(failures, src.snapshot)
    if not result["passed"]:
        raise StageError(
            f"{src.snapshot} breaks the data contract {src.contract}: {result['errors']} error(s), "
            f"{result['warnings']} warning(s):\n{text}"
        )
    for line in text.splitlines():
        logger.warning(line)
    ordered = frame.sort_values(contract.key, kind="stable").reset_index(drop=True)
    write_parquet("data/validated.parquet", ordered)
    logger.info("contract passed: %d rows, %d warning(s)", len(frame), result["warnings"])


if __name__ == "__main__":
    run_stage("validate", main)
