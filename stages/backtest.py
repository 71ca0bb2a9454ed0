"""Stage backtest: replay production month by month and compare retraining policies."""

import logging
from dataclasses import replace

import pandas as pd

from panelcast.backtest import BacktestData, run_backtest, summarise
from panelcast.cli import run_stage
from panelcast.features import feature_columns
from panelcast.io import atomic_write, write_csv, write_json
from panelcast.monitoring import drift_thresholds
from panelcast.report import backtest_figure

logger = logging.getLogger("panelcast.stages.backtest")


def main(params, args) -> None:
    frame = pd.read_parquet("data/features.parquet")
    cols = feature_columns(frame, params.problem)
    spec = params.backtest
    train = replace(params.train, search=replace(params.train.search, enabled=False))
    replays = run_backtest(
        BacktestData(
            frame,
            cols,
            params.problem.segment,
            max(params.features.lags),
            spec,
            train,
            params.features.scale,
            drift_thresholds(params.drift),
        )
    )
    summary = summarise(replays, spec)
    months = pd.DataFrame([m for r in replays for m in r.months])
    result = {
        "first_training_window": {"start": spec.first_train_start, "end": spec.first_train_end},
        "replayed": {"start": months["month"].min(), "end": months["month"].max()},
        "crisis": {"start": spec.crisis_start, "end": spec.crisis_end},
        "policies": summary,
    }
    write_json("metrics/backtest.json", result)
    wide = months.pivot(index="month", columns="policy", values="mae").round(3)
    write_csv("plots/backtest_error.csv", wide.add_suffix("_mae").reset_index())
    effects = months[months["policy"] == spec.policies[0].name][
        ["month", "max_effect", "share_drifted", "drifted"]
    ]
    write_csv("plots/backtest_drift.csv", effects)
    png = backtest_figure(months)
    atomic_write("plots/backtest.png", lambda tmp: tmp.write_bytes(png))
    for name, s in summary.items():
        logger.info(
            "policy %-10s MAE %7.2f  crisis MAE %7.2f  retrains %3d  fits %3d",
            name,
            s["mae"],
            s["crisis_mae"],
            s["retrains"],
            s["fits"],
        )


if __name__ == "__main__":
    run_stage("backtest", main)
