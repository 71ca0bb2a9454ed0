"""Stage train: fit the model with the time-ordered search; describe it; profile its reference."""

from __future__ import annotations

import hashlib
import logging
import platform
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sklearn
import skops

from ..core.config import Params
from ..core.periods import LEVEL_FEATURE, TARGET, WINDOW, T
from ..modelling.features import feature_columns
from ..modelling.model import dumps_model, fit_model, model_card, with_unit
from ..monitoring.drift import build_profile
from ..monitoring.reference import monitored_frame, steady_state

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trained:
    """What the train stage writes: the model file, its metadata, reference and metrics."""

    model_bytes: bytes
    metadata: dict
    reference: dict
    metrics: dict


def train(features: pd.DataFrame, data_sha256: str, params: Params) -> Trained:
    """Fit on the training window of ``features``; ``data_sha256`` names the source data."""
    problem = params.problem
    cal = problem.calendar
    cols = feature_columns(features, problem)
    in_window = features[WINDOW] == "train"
    rows = features[in_window & features[TARGET].notna()].reset_index(drop=True)
    logger.info(
        "training on %d rows x %d features (%d train rows without target left out)",
        len(rows),
        len(cols),
        int((in_window & features[TARGET].isna()).sum()),
    )
    model, report = fit_model(
        rows[cols],
        rows[TARGET],
        rows[T].to_numpy(),
        params.train,
        params.features.scale,
        LEVEL_FEATURE,
        threads=params.compute.threads,
        calendar=cal,
    )
    in_sample = model.predict(rows[cols])
    card = model_card(model)
    metadata = {
        "model": card,
        "features": cols,
        "target": problem.target,
        "segment": problem.segment_column,
        "training_window": {
            "start": params.windows.train_start,
            "end": params.windows.train_end,
            "rows": int(len(rows)),
        },
        "data_sha256": data_sha256,
        "params": {"train": params.train.model_dump(), "features": params.features.model_dump()},
        "versions": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
            "skops": skops.__version__,
        },
    }
    warmup = max(params.features.lags)
    steady = steady_state(rows, problem.segment_column, warmup).to_numpy()
    monitored, numeric, categorical = monitored_frame(rows[steady], cols, in_sample[steady])
    logger.info(
        "drift reference: %d training rows past the %d-%s warm-up",
        int(steady.sum()),
        warmup,
        cal.unit,
    )
    reference = build_profile(monitored, numeric, categorical)
    train_mae = float(np.abs(in_sample - rows[TARGET].to_numpy()).mean())
    metrics = {
        "train_rows": int(len(rows)),
        "train_mae_in_sample": round(train_mae, 4),
        # what the deployed model really uses: configured values overridden by the search
        "chosen": chosen_hyperparameters(params.train.hyperparameters, report),
        **report,
    }
    if report["search"]:
        metrics["cv_mae"] = round(report["search"]["best_cv_mae"], 4)
        logger.info(
            "best CV MAE %s with %s",
            with_unit(report["search"]["best_cv_mae"], problem.unit),
            report["search"]["best_params"],
        )
    model_bytes = dumps_model(model)
    # ties the metadata to this very file: the stages that load the model check it
    metadata["sha256"] = hashlib.sha256(model_bytes).hexdigest()
    return Trained(model_bytes, metadata, reference, metrics)


def chosen_hyperparameters(configured: dict, report: dict) -> dict:
    """The configured hyperparameters with the search's choices applied on top."""
    chosen = dict(configured)
    if report.get("search"):
        chosen.update(report["search"]["best_params"])
    return chosen
