"""Stage backtest: replay production period by period and compare retraining policies."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..core.config import Params
from ..core.errors import ParamsError
from ..core.periods import PERIOD, T
from ..modelling.features import feature_columns
from ..modelling.model import with_unit
from ..monitoring.backtest import (
    RECORD_COLUMNS,
    BacktestData,
    replayed_periods,
    run_backtest,
    summarise,
)
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
    """Replay every policy of ``params.backtest`` on ``features``.

    The metrics hold, per policy, the pooled error overall and in each of
    ``problem.named_periods`` (``<name>_mae``...); the plot tables have one row per
    replayed period (column ``period``).
    """
    spec, problem = params.backtest, params.problem
    cal = problem.calendar
    train = _updated(params.train, search=_updated(params.train.search, enabled=False))
    ctx = BacktestData(
        features,
        feature_columns(features, problem),
        problem.segment_column,
        max(params.features.lags),
        spec,
        train,
        params.features.scale,
        drift_thresholds(params.drift),
        cal,
        threads=params.compute.threads,
    )
    replayed = replayed_periods(ctx)
    if not replayed:
        span = (
            f"{cal.format(features[T].min())}..{cal.format(features[T].max())}"
            if len(features)
            else "nothing"
        )
        raise ParamsError(
            f"params keys 'backtest.first_train_end/end': no period of the feature table "
            f"falls after {spec.first_train_end} and up to {spec.end} (the table spans {span})."
        )
    replays = run_backtest(ctx)
    summary = summarise(replays, cal, problem.named_periods)
    periods = pd.DataFrame(
        [row for r in replays for row in r.periods], columns=list(RECORD_COLUMNS)
    )
    result = {
        # what the backtest fitted: each distinct training cutoff once, shared by the
        # policies (a policy's own "fits" is what it would cost in production)
        "distinct_fits": ctx.fitted,
        "first_training_window": {"start": spec.first_train_start, "end": spec.first_train_end},
        "replayed": {"start": cal.format(replayed[0]), "end": cal.format(replayed[-1])},
        "named_periods": {p.name: {"start": p.start, "end": p.end} for p in problem.named_periods},
        "policies": summary,
    }
    wide = periods.pivot(index=PERIOD, columns="policy", values="mae").round(3)
    effects = periods[periods["policy"] == spec.policies[0].name][
        [PERIOD, "max_effect", "share_drifted", "drifted"]
    ]
    for name, s in summary.items():
        named = "".join(
            f"  {p.name} MAE {with_unit(s[p.name + '_mae'], problem.unit):>7}"
            for p in problem.named_periods
        )
        logger.info(
            "policy %-10s MAE %7s%s  retrains %3d  fits %3d",
            name,
            with_unit(s["mae"], problem.unit),
            named,
            s["retrains"],
            s["fits"],
        )
    return Backtest(
        result,
        {
            "backtest_error.csv": wide.add_suffix("_mae").reset_index(),
            "backtest_drift.csv": effects,
        },
        backtest_figure(periods, problem),
    )


def _updated(spec: Any, **changes: Any) -> Any:
    """A copy of a params section with ``changes`` (the one place that knows how)."""
    return spec.model_copy(update=changes)
