"""Stage train: fit the model (with the time-ordered search), save it with skops,
its metadata, and the reference statistics the drift stage compares against."""

import logging
import platform
from dataclasses import asdict

import numpy as np
import pandas as pd
import sklearn
import skops

from panelcast.cli import run_stage
from panelcast.drift import build_profile
from panelcast.features import LEVEL_FEATURE, TARGET, WINDOW, T, feature_columns
from panelcast.io import read_json, write_bytes, write_json
from panelcast.model import dumps_model, fit_model, model_card
from panelcast.monitoring import monitored_frame, steady_state

logger = logging.getLogger("panelcast.stages.train")


def main(params, args) -> None:
    frame = pd.read_parquet("data/features.parquet")
    cols = feature_columns(frame, params.problem)
    train = frame[(frame[WINDOW] == "train") & frame[TARGET].notna()].reset_index(drop=True)
    logger.info(
        "training on %d rows x %d features (%d train rows without target left out)",
        len(train),
        len(cols),
        int(((frame[WINDOW] == "train") & frame[TARGET].isna()).sum()),
    )
    model, report = fit_model(
        train[cols],
        train[TARGET],
        train[T].to_numpy(),
        params.train,
        params.features.scale,
        LEVEL_FEATURE,
    )
    in_sample = model.predict(train[cols])
    write_bytes("models/model.skops", dumps_model(model))
    collect = read_json("metrics/collect.json")
    metadata = {
        "model": model_card(model),
        "features": cols,
        "target": params.problem.target,
        "segment": params.problem.segment,
        "training_window": {
            "start": params.windows.train_start,
            "end": params.windows.train_end,
            "rows": int(len(train)),
        },
        "data_sha256": collect["source"]["sha256"],
        "params": {"train": asdict(params.train), "features": asdict(params.features)},
        "versions": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
            "skops": skops.__version__,
        },
    }
    write_json("models/metadata.json", metadata)
    steady = steady_state(train, params.problem.segment, max(params.features.lags)).to_numpy()
    monitored, numeric, categorical = monitored_frame(train[steady], cols, in_sample[steady])
    logger.info(
        "drift reference: %d training rows past the %d-month warm-up",
        int(steady.sum()),
        max(params.features.lags),
    )
    write_json("models/reference.json", build_profile(monitored, numeric, categorical))
    train_mae = float(np.abs(in_sample - train[TARGET].to_numpy()).mean())
    metrics = {"train_rows": int(len(train)), "train_mae_in_sample": round(train_mae, 4), **report}
    if report["search"]:
        metrics["cv_mae"] = round(report["search"]["best_cv_mae"], 4)
        logger.info(
            "best CV MAE %.2f with %s",
            report["search"]["best_cv_mae"],
            report["search"]["best_params"],
        )
    write_json("metrics/train.json", metrics)


if __name__ == "__main__":
    run_stage("train", main)
