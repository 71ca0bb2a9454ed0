"""The replay of production on a small synthetic panel."""

import numpy as np
import pytest

from panelcast.core.config import BacktestSpec, PolicySpec, WindowSpec
from panelcast.core.periods import LEVEL_FEATURE, TARGET, T, parse_period
from panelcast.modelling.features import build_features, feature_columns
from panelcast.modelling.model import dumps_model, fit_model
from panelcast.monitoring.backtest import BacktestData, run_backtest, summarise
from panelcast.monitoring.drift import build_profile, compare
from panelcast.monitoring.reference import drift_thresholds, monitored_frame, steady_state
from panelcast.production.retrain import plan

from ..conftest import make_panel


@pytest.fixture(scope="module")
def make_ctx(params):
    """A fresh replay context (fresh memo) on a small panel; ``changes`` edit the spec."""
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
    train = params.train.model_copy(
        update={
            "hyperparameters": {"max_iter": 20},
            "search": params.train.search.model_copy(update={"enabled": False}),
        }
    )

    def make(**changes):
        return BacktestData(
            frame,
            feature_columns(frame, params.problem),
            "city",
            24,
            spec.model_copy(update=changes),
            train,
            "log_ratio",
            drift_thresholds(params.drift),
        )

    return make


@pytest.fixture(scope="module")
def replays(make_ctx):
    ctx = make_ctx()
    return run_backtest(ctx), ctx.spec, ctx


def test_every_policy_replays_the_same_months(replays):
    out, *_ = replays
    months = [[m["month"] for m in r.months] for r in out]
    assert months[0] == months[1] == months[2]
    assert months[0][0] == "2004-01" and months[0][-1] == "2005-12"


def test_costs_follow_the_policy(replays):
    out, spec, _ = replays
    summary = summarise(out, spec)
    assert summary["never"]["retrains"] == 0 and summary["never"]["fits"] == 2
    assert summary["every_6"]["retrains"] == 4  # 2004-06, 2004-12, 2005-06, 2005-12
    assert summary["every_6"]["fits"] == 2 + 4 + summary["every_6"]["promotions"]
    for s in summary.values():
        assert s["n"] == 3 * 24 and s["mae"] > 0 and s["crisis_n"] == 3 * 6


def test_retrain_events_are_marked_in_the_months(replays):
    out, *_ = replays
    every = out[1]
    marked = [m["month"] for m in every.months if m["retrain"]]
    assert marked == [e["month"] for e in every.events]


def test_one_fit_per_training_cutoff_shared_by_the_policies(replays):
    out, spec, ctx = replays
    first_end, vm = parse_period(spec.first_train_end), spec.validation_months
    cutoffs = {first_end, first_end - vm}
    for r in out:
        for e in r.events:
            month = parse_period(e["month"])
            cutoffs |= {month - vm, month} if e["promoted"] else {month - vm}
    assert ctx.fitted == len(cutoffs) < sum(r.fits for r in out)


def test_sharing_does_not_change_any_policy(make_ctx, replays):
    """Each policy replayed alone, with nothing shared, does exactly the same."""
    out, spec, _ = replays
    for policy, shared in zip(spec.policies, out, strict=True):
        (alone,) = run_backtest(make_ctx(policies=[policy]))
        assert (alone.months, alone.events, alone.fits) == (
            shared.months,
            shared.events,
            shared.fits,
        )


def test_fits_in_processes_give_the_same_replay(make_ctx, replays):
    out, _, ctx = replays
    par_ctx = make_ctx(n_jobs=2)
    par = run_backtest(par_ctx)
    assert [(r.months, r.events, r.fits) for r in par] == [
        (r.months, r.events, r.fits) for r in out
    ]
    assert par_ctx.fitted == ctx.fitted


def test_memoised_results_equal_direct_ones(make_ctx):
    """Model, predictions, profile and drift check as the replay computed them unshared."""
    ctx = make_ctx()
    frame, cols = ctx.frame, ctx.cols
    cut, month = parse_period("2004-06"), parse_period("2005-03")
    known = frame[frame[TARGET].notna()]
    rows = known[known[T].between(parse_period("2000-01"), cut)]
    fresh, _ = fit_model(
        rows[cols], rows[TARGET], rows[T].to_numpy(), ctx.train, "log_ratio", LEVEL_FEATURE
    )
    assert dumps_model(ctx.model(cut)) == dumps_model(fresh)
    steady = steady_state(rows, "city", 24).to_numpy()
    pred = fresh.predict(rows[cols])
    mon, num, cat = monitored_frame(rows[steady], cols, pred[steady])
    assert ctx.deployed(cut).profile == build_profile(mon, num, cat)
    ctx.predict(cut, ctx.positions(month, month))  # cached, with the months after it
    window = frame[frame[T].between(month - 11, month)]
    direct = fresh.predict(window[cols])
    np.testing.assert_array_equal(ctx.predict(cut, ctx.positions(month - 11, month)), direct)
    report = compare(
        ctx.deployed(cut).profile, monitored_frame(window, cols, direct)[0], ctx.thresholds
    )
    effects = [c["effect"] for c in report["columns"].values() if c["effect"] is not None]
    assert ctx.drift(cut, month) == {
        "drifted": report["drifted"],
        "share_drifted": report["share_drifted"],
        "max_effect": max(effects),
    }


def test_retrain_plan_moves_the_windows(params):
    new = plan(params, "2015-07")
    assert (new.train_end, new.test_start, new.test_end) == ("2014-07", "2014-08", "2015-07")
    assert "windows.train_end=2014-07" in new.set_args()
    assert plan(params, "2012-06") is None  # cannot move: would end before the current one
