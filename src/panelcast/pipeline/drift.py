"""Stage drift: compare the current window with the training reference stored at train time."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ..core.config import DriftSpec
from ..core.errors import ParamsError
from ..core.periods import Calendar, T
from ..monitoring.drift import compare
from ..monitoring.reference import drift_thresholds, monitored_frame

logger = logging.getLogger(__name__)


def drift(
    features: pd.DataFrame,
    model: Any,
    columns: list[str],
    reference: dict,
    spec: DriftSpec,
    calendar: Calendar,
) -> tuple[dict, pd.DataFrame]:
    """The drift report of the window ``spec.current_start..current_end``, and its plot table.

    ``calendar`` (``problem.calendar``) reads the window's periods.
    """
    start, end = calendar.parse(spec.current_start), calendar.parse(spec.current_end)
    current = features[features[T].between(start, end)].reset_index(drop=True)
    if current.empty:
        span = (
            f"{calendar.format(features[T].min())}..{calendar.format(features[T].max())}"
            if len(features)
            else "nothing"
        )
        raise ParamsError(
            f"params keys 'drift.current_start/current_end': the drift window "
            f"{spec.current_start}..{spec.current_end} holds no rows of the feature table "
            f"(which spans {span})."
        )
    frame, _, _ = monitored_frame(current, columns, model.predict(current[columns]))
    report = compare(reference, frame, drift_thresholds(spec))
    report = {"window": {"start": spec.current_start, "end": spec.current_end}, **report}
    rows = [
        {
            "column": name,
            "effect": c["effect"],
            "missing_effect": c["missing_effect"],
            "drifted": c["drifted"],
        }
        for name, c in report["columns"].items()
    ]
    verdict = "RETRAIN recommended" if report["drifted"] else "no retraining needed"
    logger.info("drift %s..%s: %s", spec.current_start, spec.current_end, verdict)
    for reason in report["reasons"]:
        logger.info("  %s", reason)
    return report, pd.DataFrame(rows)
