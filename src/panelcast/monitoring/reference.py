"""What is monitored for drift: every feature, the target and the model's predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.config import DriftSpec
from ..core.periods import PREDICTION, TARGET, T
from .drift import DriftThresholds


def monitored_frame(
    rows: pd.DataFrame,
    features: list[str],
    predictions: np.ndarray,
    at: np.ndarray | None = None,
    target: np.ndarray | None = None,
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The monitored columns of ``rows`` and which are numeric or categorical.

    ``at``: the positions of the rows monitored (default all; ``predictions`` holds one
    value per row monitored); ``target``: the target of every row of ``rows`` (default its
    column ``target``). The columns are gathered one at a time into a new frame: one copy
    of the monitored values, never a copy of ``rows`` first.
    """
    index = rows.index if at is None else rows.index[at]
    frame = pd.DataFrame(index=index)
    for c in features:
        values = rows[c].array
        frame[c] = values if at is None else values.take(at)
    target = rows[TARGET].to_numpy() if target is None else np.asarray(target)
    frame[TARGET] = target if at is None else target[at]
    frame[PREDICTION] = np.asarray(predictions, dtype=float)
    categorical = [
        c
        for c in frame.columns
        if isinstance(frame[c].dtype, pd.CategoricalDtype)
        or not pd.api.types.is_numeric_dtype(frame[c])
    ]
    for c in categorical:
        frame[c] = frame[c].astype(str).where(frame[c].notna(), None)
    numeric = [c for c in frame.columns if c not in categorical]
    return frame, numeric, categorical


def steady_state(
    rows: pd.DataFrame, segment: str, warmup: int, min_share: float = 0.5
) -> pd.Series:
    """Rows past each segment's first ``warmup`` months (all lags available).

    The reference for drift excludes the warm-up, whose lag features are missing by
    construction: otherwise every production window "drifts" in its missing rates.
    Falls back to all rows when fewer than ``min_share`` of them are past the warm-up.
    """
    first = rows.groupby(segment, observed=True)[T].transform("min")
    mask = (rows[T] - first) >= warmup
    if mask.mean() < min_share:
        return pd.Series(True, index=rows.index)
    return mask


def drift_thresholds(spec: DriftSpec) -> DriftThresholds:
    """Drift thresholds from the params' drift section."""
    return DriftThresholds(
        numeric_effect=spec.numeric_effect,
        categorical_effect=spec.categorical_effect,
        missing_effect=spec.missing_effect,
        alpha=spec.alpha,
        dataset_share=spec.dataset_share,
        key_columns=tuple(spec.key_columns),
    )
