"""The replay of production on a small synthetic panel."""

from dataclasses import replace

import pytest

from panelcast.core.config import BacktestSpec, PolicySpec, WindowSpec
from panelcast.modelling.features import build_features, feature_columns
from panelcast.monitoring.backtest import BacktestData, run_backtest, summarise
from panelcast.monitoring.reference import drift_thresholds
from panelcast.production.retrain import plan

from ..conftest import make_panel


@pytest.fixture(scope="module")
def replays(params):
    frame, _ = build_features(
        make_panel(years=6),
        params.problem,
        params.features,
        WindowSpec("2000-02", "2003-12", "2004-01", "2005-12"),
    )
    spec = BacktestSpec(
        first_train_start="2000-01",
        first_train_end="2003-12",
        end="2005-12",
        policies=[
            PolicySpec("never", "never"),
            PolicySpec("every_6", "every", 6),
            PolicySpec("on_alarm", "on_alarm"),
        ],
        validation_months=3,
        drift_window_months=12,
        error_window_months=3,
        error_factor=1.5,
        min_months_between=3,
        crisis_start="2005-01",
        crisis_end="2005-06",
        n_jobs=1,
    )
    train = replace(
        params.train,
        hyperparameters={"max_iter": 20},
        search=replace(params.train.search, enabled=False),
    )
    out = run_backtest(
        BacktestData(
            frame,
            feature_columns(frame, params.problem),
            "city",
            24,
            spec,
            train,
            "log_ratio",
            drift_thresholds(params.drift),
        )
    )
    return out, spec


def test_every_policy_replays_the_same_months(replays):
    out, _ = replays
    months = [[m["month"] for m in r.months] for r in out]
    assert months[0] == months[1] == months[2]
    assert months[0][0] == "2004-01" and months[0][-1] == "2005-12"


def test_costs_follow_the_policy(replays):
    out, spec = replays
    summary = summarise(out, spec)
    assert summary["never"]["retrains"] == 0 and summary["never"]["fits"] == 2
    assert summary["every_6"]["retrains"] == 4  # 2004-06, 2004-12, 2005-06, 2005-12
    assert summary["every_6"]["fits"] == 2 + 4 + summary["every_6"]["promotions"]
    for s in summary.values():
        assert s["n"] == 3 * 24 and s["mae"] > 0 and s["crisis_n"] == 3 * 6


def test_retrain_events_are_marked_in_the_months(replays):
    out, _ = replays
    every = out[1]
    marked = [m["month"] for m in every.months if m["retrain"]]
    assert marked == [e["month"] for e in every.events]


def test_retrain_plan_moves_the_windows(params):
    new = plan(params, "2015-07")
    assert (new.train_end, new.test_start, new.test_end) == ("2014-07", "2014-08", "2015-07")
    assert "windows.train_end=2014-07" in new.set_args()
    assert plan(params, "2012-06") is None  # cannot move: would end before the current one
