"""Stage validate: check the snapshot against the data contract; refuse it on any error."""

from __future__ import annotations

import logging

import pandas as pd

from ..core.config import ProblemSpec
from ..core.errors import DataError
from ..data.contract import Contract, check, check_completeness, format_failures, report

logger = logging.getLogger(__name__)


def validate(
    frame: pd.DataFrame,
    contract: Contract,
    problem: ProblemSpec,
    snapshot_name: str,
    contract_name: str,
) -> tuple[pd.DataFrame | None, dict, str]:
    """Check ``frame`` (column, key and time rules, then the panel's completeness with the
    segment and time columns of ``problem``); return the validated table (``None`` when
    refused), the report and the failures as text. The caller writes the report before
    raising :func:`refusal`."""
    time_columns = (problem.time.year_column, problem.time.month_column)
    failures = check(frame, contract, time_columns)
    failures += check_completeness(frame, contract, problem.segment, time_columns)
    result = report(failures, snapshot_name, contract_name, len(frame))
    text = format_failures(failures, snapshot_name)
    if not result["passed"]:
        return None, result, text
    for line in text.splitlines():
        logger.warning(line)
    ordered = frame.sort_values(contract.key, kind="stable").reset_index(drop=True)
    logger.info("contract passed: %d rows, %d warning(s)", len(frame), result["warnings"])
    return ordered, result, text


def refusal(result: dict, text: str, snapshot_name: str, contract_name: str) -> DataError:
    """The error a refused snapshot raises (all failures, one per line)."""
    return DataError(
        f"{snapshot_name} breaks the data contract {contract_name}: {result['errors']} "
        f"error(s), {result['warnings']} warning(s):\n{text}"
    )
