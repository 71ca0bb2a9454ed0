"""Stage validate: check the snapshot against the data contract, prepare the panel, check
the panel's completeness; refuse the snapshot on any error."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..core.config import PrepareSpec, ProblemSpec, TimeSpec
from ..core.errors import DataError
from ..data.contract import (
    Contract,
    Failure,
    check,
    check_completeness,
    format_failures,
    read_time,
    report,
)
from ..data.prepare import PrepareError, prepare

logger = logging.getLogger(__name__)


def validate(
    frame: pd.DataFrame,
    contract: Contract,
    problem: ProblemSpec,
    prepare_spec: PrepareSpec,
    snapshot_name: str,
    contract_name: str,
) -> tuple[pd.DataFrame | None, dict, str]:
    """Check the raw ``frame`` (column, key and time rules of ``contract``), turn it into
    the panel (``prepare_spec``: filter, wide to long, aggregate, missing periods), then
    check the panel's completeness (its segment column and the periods of
    ``problem.time``; inserted periods count as missing).

    Returns the prepared panel (``None`` when refused), the report (with a ``prepare``
    and a ``time`` section) and the failures as text, one per line. The caller writes the
    report before raising :func:`refusal`. The contract must be loaded in the calendar of
    ``problem.time`` (``load_contract(path, calendar=problem.calendar)``).
    """
    time = problem.time
    failures = check(frame, contract, time)
    raw_errors = _errors(failures)
    prepared = None
    try:  # also after raw errors: the completeness problems are reported with them, at once
        prepared = prepare(frame, problem, prepare_spec)
    except PrepareError as exc:
        if not raw_errors:
            failures.append(_failure(exc))
    except (ValueError, TypeError, KeyError):
        if not raw_errors:  # a table the raw rules passed must prepare: this is a bug
            raise
    if prepared is not None:
        observed = prepared.panel
        if prepared.inserted.any():  # completeness is about the rows the data holds
            observed = prepared.panel.loc[~prepared.inserted]
        failures += check_completeness(observed, contract, problem.segment_column, time)
    result = report(failures, snapshot_name, contract_name, len(frame))
    result["prepare"] = prepared.report if prepared is not None else None
    result["time"] = time_section(prepared.panel if prepared is not None else frame, time)
    text = format_failures(failures, snapshot_name)
    if raw_errors or prepared is None or not result["passed"]:
        return None, result, text
    for line in text.splitlines():
        logger.warning(line)
    logger.info(
        "contract passed: %d rows in, panel of %d rows (%d segment(s), %s), %d warning(s)",
        len(frame),
        len(prepared.panel),
        prepared.report["segments"],
        _span_text(result["time"]),
        result["warnings"],
    )
    return prepared.panel, result, text


def _errors(failures: list[Failure]) -> bool:
    return any(f.severity == "error" for f in failures)


def _failure(exc: PrepareError) -> Failure:
    """A prepare problem as a contract-style failure (one line, naming the params key)."""
    return Failure("error", exc.column, f"prepare.{exc.rule}", 1, [], str(exc))


def time_section(frame: pd.DataFrame, time: TimeSpec) -> dict:
    """The time axis of ``frame`` for the report: frequency, columns, first and last
    period, number of distinct periods (``None`` figures when no time is readable)."""
    cal = time.calendar
    ok, index, _ = read_time(frame, time)
    periods = index[ok]
    section: dict = {
        "frequency": time.frequency,
        "unit": cal.unit,
        "columns": list(time.columns),
        "first": None,
        "last": None,
        "periods": 0,
    }
    if len(periods):
        section["first"] = cal.format(periods.min())
        section["last"] = cal.format(periods.max())
        section["periods"] = int(len(np.unique(periods)))
    return section


def _span_text(section: dict) -> str:
    if section["first"] is None:
        return "no readable period"
    return f"{section['first']}..{section['last']}, {section['periods']} {section['unit']}(s)"


def refusal(result: dict, text: str, snapshot_name: str, contract_name: str) -> DataError:
    """The error a refused snapshot raises (all failures, one per line)."""
    return DataError(
        f"{snapshot_name} breaks the data contract {contract_name}: {result['errors']} "
        f"error(s), {result['warnings']} warning(s):\n{text}"
    )
