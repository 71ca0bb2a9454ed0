"""Stage drift: compare the current window with the training reference stored at train time."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import DriftSpec
from ..core.errors import ParamsError
from ..core.periods import PREDICTION, TARGET, WINDOW, Calendar, T
from ..core.progress import Progress
from ..modelling.routing import Router
from ..monitoring.drift import build_profile, compare
from ..monitoring.reference import drift_thresholds, monitored_frame, steady_state

logger = logging.getLogger(__name__)


def drift(
    features: pd.DataFrame,
    model: Any,
    columns: list[str],
    reference: dict,
    spec: DriftSpec,
    calendar: Calendar,
    train_end: int | None = None,
    warmup: int = 0,
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The drift report of the window ``spec.current_start..current_end``, its plot table,
    and the per-segment verdicts (:func:`segment_drift`).

    ``calendar`` (``problem.calendar``) reads the window's periods. ``model`` is the global
    model or a :class:`~panelcast.modelling.routing.Router` (then ``train_end``, the last
    training period, is where its statistical models were fitted).
    """
    start, end = calendar.parse(spec.current_start), calendar.parse(spec.current_end)
    in_window = features[T].between(start, end).to_numpy()
    current = features[in_window].reset_index(drop=True)
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
    if isinstance(model, Router):
        predictions = model.predict(features, columns, fit_end=train_end)
    else:
        predictions = np.full(len(features), np.nan)
        predictions[in_window] = model.predict(current[columns])
    frame, _, _ = monitored_frame(current, columns, predictions[in_window])
    report = compare(reference, frame, drift_thresholds(spec))
    report = {"window": {"start": spec.current_start, "end": spec.current_end}, **report}
    segment = getattr(model, "segment_column", None)
    by_segment = pd.DataFrame()
    if segment is not None and isinstance(model, Router):
        summary, by_segment = segment_drift(
            features, predictions, in_window, segment, spec, model, warmup
        )
        report["segments"] = summary
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
    if "segments" in report:
        seg = report["segments"]
        logger.info(
            "per segment (%s): %d of %d drifted%s",
            ", ".join(seg["columns"]),
            seg["drifted"],
            seg["checked"],
            ": " + ", ".join(seg["drifted_segments"][:10]) if seg["drifted"] else "",
        )
    return report, pd.DataFrame(rows), by_segment


def segment_drift(
    features: pd.DataFrame,
    predictions: np.ndarray,
    in_window: np.ndarray,
    segment: str,
    spec: DriftSpec,
    router: Router,
    warmup: int = 0,
) -> tuple[dict, pd.DataFrame]:
    """Drift of each segment on its own: the key columns that are numeric (the target and
    the prediction by default) in the current window against the same segment's training
    rows past the warm-up, with the same tests and thresholds as the whole table.

    A segment with its own model is thus monitored against its own history; the verdict
    names the segments to look at, whatever the table-wide verdict.
    """
    frame = pd.DataFrame(
        {
            segment: features[segment].astype(str).to_numpy(),
            T: features[T].to_numpy(),
            TARGET: features[TARGET].to_numpy(dtype=float),
            PREDICTION: predictions,
        }
    )
    for col in spec.key_columns:
        if col not in frame and col in features and pd.api.types.is_numeric_dtype(features[col]):
            frame[col] = features[col].to_numpy(dtype=float)
    columns = [c for c in spec.key_columns if c in frame and c not in (segment, T)]
    is_train = (features[WINDOW] == "train").to_numpy()
    reference_rows = is_train & steady_state(frame, segment, warmup).to_numpy()
    thresholds = drift_thresholds(spec)
    thresholds = type(thresholds)(**{**thresholds.__dict__, "key_columns": tuple(columns)})
    rows = []
    groups = frame.groupby(segment, sort=True).indices
    progress = Progress("per-segment drift", len(groups), "segments", log=logger)
    for k, (name, idx) in enumerate(groups.items(), start=1):
        ref = frame.iloc[idx[reference_rows[idx]]]
        cur = frame.iloc[idx[in_window[idx]]]
        row = {"segment": name, "family": router.family(name), "drifted": None}
        if len(ref) and len(cur):
            rep = compare(build_profile(ref[columns], columns, []), cur[columns], thresholds)
            row["drifted"] = bool(rep["drifted"])
            for col in columns:
                row[f"{col}_effect"] = rep["columns"][col]["effect"]
        rows.append(row)
        progress.update(k)
    table = pd.DataFrame(rows)
    drifted = table.loc[table["drifted"].fillna(False).astype(bool), "segment"].tolist()
    summary = {
        "columns": columns,
        "checked": int(table["drifted"].notna().sum()),
        "drifted": len(drifted),
        "drifted_segments": drifted,
    }
    return summary, table
