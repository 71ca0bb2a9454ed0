"""What is monitored for drift: every feature, the target and the model's predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .features import TARGET

PREDICTION = "prediction"


def monitored_frame(
    rows: pd.DataFrame, features: list[str], predictions: np.ndarray
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The monitored columns of ``rows`` and which are numeric or categorical."""
    frame = rows[features].copy()
    frame[TARGET] = rows[TARGET].to_numpy()
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
