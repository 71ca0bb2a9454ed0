"""Stage backtest: replay production month by month and compare retraining policies."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..core.config import Params
from ..modelling.features import feature_columns
from ..monitoring.backtest import BacktestData, run_backtest, summarise
from ..monitoring.reference import drift_thresholds
from ..report.figures import backtest_figure

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backtest:
    """The backtest's metrics, plot tables and figure."""

    metrics: dict
    plots: dict[str, pd.DataFrame]
    figure_png: bytes


def backtest(features: pd.DataFrame, params: Params) -> Backtest:
    """Replay every policy of ``params.backtest`` on ``features``."""
    spec = params.backtest
    train = _updated(params.train, search=_updated(params.train.search, enabled=False))
    ctx = BacktestData(
        features,
        feature_columns(features, params.problem),
        params.problem.segment,
        max(params.features.lags),
        spec,
        train,
        params.features.scale,
        drift_thresholds(params.drift),
        threads=params.compute.threads,
    )
    replays = run_backtest(ctx)
    summary = summarise(replays, spec)
    months = pd.DataFrame([m for r in replays for m in r.months])
    result = {
        # what the backtest fitted: each distinct training cutoff once, shared by the
        # policies (a policy's own "fits" is what it would cost in production)
        "distinct_fits": ctx.fitted,
        "first_training_window": {"start": spec.first_train_start, "end": spec.first_train_end},
        "replayed": {"start": months["month"].min(), "end": months["month"].max()},
        "crisis": {"start": spec.crisis_start, "end": spec.crisis_end},
        "policies": summary,
    }
    wide = months.pivot(index="month", columns="policy", values="mae").round(3)
    effects = months[months["policy"] == spec.policies[0].name][
        ["month", "max_effect", "share_drifted", "drifted"]
    ]
    for name, s in summary.items():
        crisis = "-" if s["crisis_mae"] is None else f"{s['crisis_mae']:.2f}"
        logger.info(
            "policy %-10s MAE %7.2f  crisis MAE %7s  retrains %3d  fits %3d",
            name,
            s["mae"],
            crisis,
            s["retrains"],
            s["fits"],
        )
    return Backtest(
        result,
        {
            "backtest_error.csv": wide.add_suffix("_mae").reset_index(),
            "backtest_drift.csv": effects,
        },
        backtest_figure(months),
    )


def _updated(spec: Any, **changes: Any) -> Any:
    """A copy of a params section with ``changes`` (the one place that knows how)."""
    return spec.model_copy(update=changes)
