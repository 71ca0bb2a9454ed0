"""The replay of production on small synthetic panels (monthly, quarterly, one series)."""

import logging
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from panelcast.core.config import (
    BacktestSpec,
    GateSpec,
    NamedPeriod,
    Params,
    PolicySpec,
    WindowSpec,
    params_from_dict,
)
from panelcast.core.errors import DataError, ModelFileError
from panelcast.core.periods import LEVEL_FEATURE, MONTHLY, TARGET, T
from panelcast.modelling.features import build_features, feature_columns
from panelcast.modelling.model import dumps_model, fit_model, model_card
from panelcast.modelling.statistical import FittedStat, blend, select
from panelcast.monitoring.backtest import BacktestData, costs, run_backtest, summarise
from panelcast.monitoring.drift import build_profile, compare
from panelcast.monitoring.reference import drift_thresholds, monitored_frame, steady_state
from panelcast.pipeline.backtest import Selection, backtest, deployed_selection, replay_data
from panelcast.production.retrain import plan
from panelcast.report.figures import backtest_figure, backtest_plot

from ..conftest import ROOT, make_panel


def small_spec(policies: list[PolicySpec]) -> BacktestSpec:
    """A backtest of 2004-2005 after a first training window of 2000-2003."""
    return BacktestSpec(
        first_train_start="2000-01",
        first_train_end="2003-12",
        end="2005-12",
        policies=policies,
        validation_periods=3,
        drift_window_periods=12,
        error_window_periods=3,
        error_factor=1.5,
        min_periods_between=3,
        n_jobs=1,
    )


@pytest.fixture(scope="module")
def make_ctx(params):
    """A fresh replay context (fresh memo) on a small panel; ``changes`` edit the spec."""
    frame, _ = build_features(
        make_panel(years=6),
        params.problem,
        params.features,
        WindowSpec("2000-02", "2003-12", "2004-01", "2005-12"),
    )
    spec = small_spec(
        [
            PolicySpec("never", "never"),
            PolicySpec("every_6", "every", 6),
            PolicySpec("on_alarm", "on_alarm"),
        ]
    )
    train = params.train.model_copy(
        update={
            "hyperparameters": {"max_iter": 20},
            "search": params.train.search.model_copy(update={"enabled": False}),
        }
    )

    def make(data=None, **changes):
        return BacktestData(
            frame,
            feature_columns(frame, params.problem),
            "city",
            24,
            spec.model_copy(update=changes),
            (data or {}).pop("train", train),
            "log_ratio",
            drift_thresholds(params.drift),
            MONTHLY,
            **(data or {}),
        )

    return make


@pytest.fixture(scope="module")
def replays(make_ctx):
    ctx = make_ctx()
    return run_backtest(ctx), ctx.spec, ctx


def test_every_policy_replays_the_same_periods(replays):
    out, *_ = replays
    periods = [[m["period"] for m in r.periods] for r in out]
    assert periods[0] == periods[1] == periods[2]
    assert periods[0][0] == "2004-01" and periods[0][-1] == "2005-12"


def test_costs_follow_the_policy(replays):
    out, spec, _ = replays
    summary = summarise(out, MONTHLY, [NamedPeriod("crisis", "2005-01", "2005-06")])
    assert summary["never"]["retrains"] == 0 and summary["never"]["fits"] == 2
    assert summary["every_6"]["retrains"] == 4  # 2004-06, 2004-12, 2005-06, 2005-12
    assert summary["every_6"]["fits"] == 2 + 4 + summary["every_6"]["promotions"]
    for s in summary.values():
        assert s["n"] == 3 * 24 and s["mae"] > 0 and s["crisis_n"] == 3 * 6
        assert s["crisis_mae"] > 0 and s["crisis_wape"] > 0


def test_each_named_period_is_summarised_and_none_without_them(replays):
    out, *_ = replays
    named = [NamedPeriod("early", "2004-01", "2004-03"), NamedPeriod("late", "2005-12", "2005-12")]
    summary = summarise(out, MONTHLY, named)
    plain = summarise(out, MONTHLY)
    for policy, s in summary.items():
        assert s["early_n"] == 3 * 3 and s["late_n"] == 3
        assert {k: v for k, v in s.items() if not k.startswith(("early_", "late_"))} == plain[
            policy
        ]
    assert not [k for k in plain["never"] if k.startswith("crisis")]
    assert list(plain["never"])[:3] == ["mae", "wape", "n"]
    drifted = [m["period"] for m in out[0].periods if m["drifted"]]
    assert plain["never"]["drift_periods"] == drifted
    assert "drift_months" not in plain["never"] and "error_alarm_periods" in plain["never"]


def test_retrain_events_are_marked_in_the_periods(replays):
    out, *_ = replays
    every = out[1]
    marked = [m["period"] for m in every.periods if m["retrain"]]
    assert marked == [e["period"] for e in every.events]


def test_one_fit_per_training_cutoff_shared_by_the_policies(replays):
    out, spec, ctx = replays
    first_end, vm = MONTHLY.parse(spec.first_train_end), spec.validation_periods
    cutoffs = {first_end, first_end - vm}
    for r in out:
        for e in r.events:
            period = MONTHLY.parse(e["period"])
            cutoffs |= {period - vm, period} if e["promoted"] else {period - vm}
    assert ctx.fitted == len(cutoffs) < sum(r.fits for r in out)


def test_sharing_does_not_change_any_policy(make_ctx, replays):
    """Each policy replayed alone, with nothing shared, does exactly the same."""
    out, spec, _ = replays
    for policy, shared in zip(spec.policies, out, strict=True):
        (alone,) = run_backtest(make_ctx(policies=[policy]))
        assert (alone.periods, alone.events, alone.fits) == (
            shared.periods,
            shared.events,
            shared.fits,
        )


def test_fits_in_processes_give_the_same_replay(make_ctx, replays):
    out, _, ctx = replays
    par_ctx = make_ctx(n_jobs=2)
    par = run_backtest(par_ctx)
    assert [(r.periods, r.events, r.fits) for r in par] == [
        (r.periods, r.events, r.fits) for r in out
    ]
    assert par_ctx.fitted == ctx.fitted


def test_memoised_results_equal_direct_ones(make_ctx):
    """Model, predictions, profile and drift check as the replay computed them unshared."""
    ctx = make_ctx()
    frame, cols = ctx.frame, ctx.cols
    cut, month = MONTHLY.parse("2004-06"), MONTHLY.parse("2005-03")
    known = frame[frame[TARGET].notna()]
    rows = known[known[T].between(MONTHLY.parse("2000-01"), cut)]
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


# --------------------------------------------------------------------------- any frequency


def make_quarterly(segments=("A", "B", "C"), years=12, seed=1) -> pd.DataFrame:
    """A small quarterly table (``year``, ``quarter``): seasonal sales per segment, or one
    series (``segments=()``, with the ``series`` column prepare adds)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, seg in enumerate(segments or ("all",)):
        for k in range(years * 4):
            quarter = k % 4 + 1
            sales = 50.0 * (i + 1) * (1 + 0.2 * np.sin(2 * np.pi * quarter / 4)) * (1 + 0.02 * k)
            rows.append(
                {
                    "city" if segments else "series": seg,
                    "year": 2000 + k // 4,
                    "quarter": quarter,
                    "sales": float(round(sales + rng.normal(0, 2))),
                }
            )
    return pd.DataFrame(rows)


def quarterly_params(named_periods: list[dict], single: bool = False) -> Params:
    """The real params.yaml for :func:`make_quarterly`: quarters, a unit, a short backtest."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    problem = data["problem"]
    problem["time"] = {"frequency": "Q", "year_column": "year", "period_column": "quarter"}
    problem.update(target_label="Harvest", unit="tonnes", named_periods=named_periods)
    if single:
        del problem["segment"]
    data["windows"] = {
        "train_start": "2001-Q1",
        "train_end": "2007-Q4",
        "test_start": "2008-Q1",
        "test_end": "2011-Q4",
    }
    data["features"].update(lags=[1, 2, 3, 4], rolling=[2, 4], level_window=4, exogenous=[])
    data["train"]["hyperparameters"] = {"max_iter": 20}
    data["train"]["search"]["enabled"] = False
    data["drift"].update(current_start="2008-Q1", current_end="2011-Q4")
    data["backtest"].update(
        first_train_start="2000-Q1",
        first_train_end="2005-Q4",
        end="2009-Q4",
        policies=[
            {"name": "never", "kind": "never"},
            {"name": "every_4", "kind": "every", "every_periods": 4},
            {"name": "on_alarm", "kind": "on_alarm"},
            {"name": "on_error", "kind": "on_error", "per_segment": True},
        ],
        validation_periods=2,
        drift_window_periods=4,
        error_window_periods=2,
        min_periods_between=2,
    )
    return params_from_dict(data)


SLUMP = [{"name": "slump", "start": "2007-Q2", "end": "2008-Q1"}]


@pytest.fixture(scope="module")
def quarterly():
    """The backtest stage on a quarterly panel, with one named period and with none."""
    out = {}
    for key, named in (("named", SLUMP), ("none", [])):
        params = quarterly_params(named)
        features, _ = build_features(
            make_quarterly(), params.problem, params.features, params.windows
        )
        out[key] = params, backtest(features, params)
    return out


def test_a_quarterly_backtest_reports_its_named_period(quarterly):
    params, result = quarterly["named"]
    metrics = result.metrics
    assert metrics["named_periods"] == {"slump": {"start": "2007-Q2", "end": "2008-Q1"}}
    assert metrics["replayed"] == {"start": "2006-Q1", "end": "2009-Q4"}
    assert "crisis" not in metrics
    for s in metrics["policies"].values():
        assert s["n"] == 3 * 16 and s["slump_n"] == 3 * 4 and s["slump_mae"] > 0
        assert not [k for k in s if k.startswith("crisis") or k.endswith("_months")]
        assert all(p[4:6] == "-Q" for p in s["drift_periods"] + s["error_alarm_periods"])
    assert metrics["policies"]["every_4"]["retrains"] == 4  # every 4 quarters over 4 years
    error = result.plots["backtest_error.csv"]
    assert list(error.columns) == [
        "period",
        "every_4_mae",
        "never_mae",
        "on_alarm_mae",
        "on_error_mae",
    ]
    assert error["period"].tolist() == [
        f"{y}-Q{q}" for y in range(2006, 2010) for q in (1, 2, 3, 4)
    ]
    drift = result.plots["backtest_drift.csv"]
    assert list(drift.columns) == ["period", "max_effect", "share_drifted", "drifted"]
    assert len(drift) == 16
    assert result.figure_png.startswith(b"\x89PNG")


def test_a_backtest_without_named_periods_reports_none(quarterly):
    _, named = quarterly["named"]
    _, result = quarterly["none"]
    assert result.metrics["named_periods"] == {}
    for name, s in result.metrics["policies"].items():
        assert not [k for k in s if k.startswith("slump")]
        assert s == {k: v for k, v in named.metrics["policies"][name].items() if "slump" not in k}
    assert result.plots["backtest_error.csv"].equals(named.plots["backtest_error.csv"])
    assert result.figure_png.startswith(b"\x89PNG")


def test_backtest_logs_figures_in_the_unit_of_params(caplog):
    params = quarterly_params(SLUMP)
    features, _ = build_features(make_quarterly(), params.problem, params.features, params.windows)
    spec = params.backtest.model_copy(update={"policies": [PolicySpec("never", "never")]})
    with caplog.at_level(logging.INFO, logger="panelcast"):
        backtest(features, params.model_copy(update={"backtest": spec}))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("policy"))
    assert re.search(r"MAE +\d+\.\d\d tonnes  slump MAE +\d+\.\d\d tonnes", line), line
    assert "16 quarters" in caplog.text and "month" not in caplog.text


def test_a_single_series_replays_without_a_segment_column():
    params = quarterly_params([], single=True)
    assert params.problem.single_series and params.problem.segment_column == "series"
    features, _ = build_features(
        make_quarterly(segments=()), params.problem, params.features, params.windows
    )
    result = backtest(features, params)
    for s in result.metrics["policies"].values():
        assert s["n"] == 16 and s["mae"] > 0
    assert len(result.plots["backtest_error.csv"]) == 16


def test_retrain_plan_moves_quarterly_windows():
    params = quarterly_params([])
    assert params.retrain.test_periods == 12  # quarters here
    new = plan(params, "2013-Q2")
    assert (new.train_end, new.test_start, new.test_end) == ("2010-Q2", "2010-Q3", "2013-Q2")
    assert "windows.test_start=2010-Q3" in new.set_args()
    assert plan(params, "2011-Q1").train_end == "2008-Q1"
    assert plan(params, "2010-Q4") is None  # would end where the current window ends


# --------------------------------------------------------------------------- the figure


def test_the_figure_names_the_unit_the_label_and_each_named_period():
    params = quarterly_params(SLUMP + [{"name": "boom", "start": "2009-Q3", "end": "2012-Q4"}])
    rows = pd.DataFrame(
        {
            "period": ["2006-Q1", "2006-Q2", "2009-Q4"],
            "policy": "never",
            "mae": [1.0, None, 2.0],  # a period without an observed target has no MAE
            "retrain": ["", "", "kept"],
        }
    )
    plot = backtest_plot(rows, params.problem)
    assert plot.labels.y == "MAE (tonnes)" and plot.labels.x == "forecast quarter"
    assert "Harvest" in plot.labels.title and "quarterly" in plot.labels.title
    texts = [
        layer.geom.aes_params["label"] for layer in plot.layers if "label" in layer.geom.aes_params
    ]
    assert texts == ["slump", "boom"]  # boom is cut to the replayed periods, not dropped
    no_unit = params.problem.model_copy(update={"unit": None, "named_periods": []})
    bare = backtest_plot(rows, no_unit)
    assert bare.labels.y == "MAE (Harvest)"
    assert not [layer for layer in bare.layers if "label" in layer.geom.aes_params]
    assert backtest_figure(rows, params.problem).startswith(b"\x89PNG")


def test_the_default_figure_is_labelled_from_params(params):
    rows = pd.DataFrame(
        {"period": ["2008-06", "2008-07"], "policy": "never", "mae": [3.0, 4.0], "retrain": ""}
    )
    plot = backtest_plot(rows, params.problem)
    assert plot.labels.y == f"MAE ({params.problem.unit})" == "MAE (homes)"
    assert plot.labels.x == "forecast month" and "monthly" in plot.labels.title
    assert "homes sold" not in str(plot.labels.title)
    texts = [layer.geom.aes_params.get("label") for layer in plot.layers]
    assert "crisis" in texts


# --------------------------------------------------------------------------- the deployed selection


@pytest.mark.parametrize("family", ["theta", "auto_ets", "seasonal_naive", "global+theta"])
def test_at_gives_one_step_at_the_positions_asked(family):
    """FittedStat.at equals one_step at any positions, in-sample and after, bit for bit
    (gaps included: both clean the whole series)."""
    rng = np.random.default_rng(3)
    k = np.arange(84)
    y = 100 * (1 + 0.3 * np.sin(2 * np.pi * k / 12)) * (1 + 0.01 * k) + rng.normal(0, 3, 84)
    y[[20, 21, 60]] = np.nan
    spec = select(family, y[:48], 12)
    stat = FittedStat(family, spec, y[:48], 12)
    full, _ = stat.one_step(y)
    for _ in range(3):
        pos = np.sort(rng.choice(len(y), 20, replace=False))
        np.testing.assert_array_equal(stat.at(y, pos), full[pos])
    np.testing.assert_array_equal(stat.at(y, [0, 47, 48, 61]), full[[0, 47, 48, 61]])
    short = y[:30]  # a series shorter than the fitted one
    np.testing.assert_array_equal(stat.at(short, [1, 29]), stat.one_step(short)[0][[1, 29]])


ROUTED = {"A": "theta", "B": "global+theta", "C": "theta"}
HYPER = {"max_iter": 15, "learning_rate": 0.2, "max_leaf_nodes": 7}


@pytest.fixture(scope="module")
def routed(params):
    """A monthly panel replayed with given hyperparameters and every segment routed to a
    statistical family: A theta, B global+theta (with a gap after the first cutoff), C
    theta but labelled from 2003-07 only (too short at the first cutoffs)."""
    windows = WindowSpec("2000-02", "2003-12", "2004-01", "2005-12")
    frame, _ = build_features(make_panel(years=6), params.problem, params.features, windows)
    t = frame[T]
    frame.loc[(frame["city"] == "C") & (t < MONTHLY.parse("2003-07")), TARGET] = np.nan
    frame.loc[(frame["city"] == "B") & (t == MONTHLY.parse("2004-06")), TARGET] = np.nan
    spec = small_spec([PolicySpec("never", "never"), PolicySpec("every_6", "every", 6)])
    small = params.model_copy(update={"windows": windows, "backtest": spec})
    models = []
    for city, family in ROUTED.items():
        y = frame.loc[(frame["city"] == city) & (t <= MONTHLY.parse("2003-12")), TARGET]
        y = y.to_numpy(dtype=float)
        y = y[np.argmax(~np.isnan(y)) :]
        models.append({"segment": city, "family": family, "candidate": select(family, y, 12)})
    selection = Selection(HYPER, "native", "pooled", models)
    return frame, small, selection


def _series(frame, city):
    """Frame positions of ``city`` from its first labelled period, and its target there."""
    rows = np.flatnonzero((frame["city"] == city).to_numpy())
    rows = rows[np.argsort(frame[T].to_numpy()[rows], kind="stable")]
    y = frame[TARGET].to_numpy(dtype=float)[rows]
    first = int(np.argmax(~np.isnan(y)))
    return rows[first:], y[first:]


def test_the_replay_uses_the_deployed_hyperparameters_and_routes(routed):
    """Every cutoff's global model has the given hyperparameters; a routed segment gets its
    specification refitted up to the cutoff, blended as the pipeline does (B has a gap)."""
    frame, small, selection = routed
    ctx = replay_data(frame, small, selection)
    cut = MONTHLY.parse("2003-12")
    assert not ctx.train.search.enabled
    assert model_card(ctx.model(cut))["params"].items() >= HYPER.items()
    t = frame[T].to_numpy()
    for city in ("A", "B"):
        rows, y = _series(frame, city)
        n_fit = int((t[rows] <= cut).sum())
        family, candidate = ctx.routes[city]
        stat, _ = FittedStat(family, candidate, y[:n_fit], 12).one_step(y)
        glob = ctx.predict_global(cut, rows)
        expected = blend(family, glob, stat)
        expected = np.where(np.isnan(expected), glob, expected)  # the first period
        got = ctx.predict(cut, rows)
        np.testing.assert_array_equal(got, expected)
        assert not np.array_equal(got, glob)
    assert ctx.fallbacks == 1  # C, predicted with the same periods, is too short


def test_a_too_short_segment_keeps_the_global_forecast(routed):
    frame, small, selection = routed
    ctx = replay_data(frame, small, selection)
    rows, _ = _series(frame, "C")
    for cut in (MONTHLY.parse("2003-12"), MONTHLY.parse("2005-06")):  # 6 and 24 labelled < 36
        np.testing.assert_array_equal(ctx.predict(cut, rows), ctx.predict_global(cut, rows))
    assert ctx.fallbacks == 2
    lenient = replay_data(
        frame,
        small.model_copy(
            update={
                "train": small.train.model_copy(
                    update={
                        "per_segment": small.train.per_segment.model_copy(
                            update={"min_train_periods": 6}
                        )
                    }
                )
            }
        ),
        selection,
    )
    cut = MONTHLY.parse("2003-12")
    assert not np.array_equal(lenient.predict(cut, rows), lenient.predict_global(cut, rows))
    assert lenient.fallbacks == 0


def test_the_backtest_reports_the_selection_it_replayed(routed):
    frame, small, selection = routed
    result = backtest(frame, small, selection)
    assert result.metrics["selection"] == {
        "hyperparameters": HYPER,
        "segment_encoding": "native",
        "strategy": "pooled",
        "families": {"global+theta": 1, "theta": 2},
        "sklearn_on_global": 0,
        "fallbacks": result.metrics["selection"]["fallbacks"],
    }
    assert result.metrics["selection"]["fallbacks"] >= 1  # C, at the first cutoffs
    policies = result.metrics["policies"]
    assert policies["never"]["n"] == policies["every_6"]["n"] > 0
    plain = backtest(frame, small)  # the configured hyperparameters, every segment global
    assert plain.metrics["selection"]["families"] == {"global": 3}
    assert plain.metrics["policies"]["never"]["mae"] != policies["never"]["mae"]
    assert list(result.plots["backtest_error.csv"].columns) == list(
        plain.plots["backtest_error.csv"].columns
    )


def test_the_selection_must_come_from_one_train_run():
    metrics = {"chosen": {"learning_rate": 0.03}, "segment_encoding": "native"}
    metadata = {"model": {"params": {"learning_rate": 0.06}}, "sha256": "abc"}
    manifest = {"strategy": "pooled", "models": [{"segment": "A", "family": "theta"}]}
    with pytest.raises(ModelFileError, match=r"metrics/train.json and models/metadata.json"):
        deployed_selection(metrics, metadata, manifest)
    metadata["model"]["params"]["learning_rate"] = 0.03
    stale = {"models": [{"segment": "A", "family": "global", "sha256": "old"}]}
    with pytest.raises(ModelFileError, match="sha256 differs"):
        deployed_selection(metrics, metadata, stale)
    odd = {"models": [{"segment": "A", "family": "prophet"}]}
    with pytest.raises(ModelFileError, match="prophet"):
        deployed_selection(metrics, metadata, odd)
    with pytest.raises(DataError, match="'chosen'"):
        deployed_selection({}, metadata, manifest)
    chosen = deployed_selection(metrics, metadata, manifest)
    assert chosen.hyperparameters == {"learning_rate": 0.03} and chosen.strategy == "pooled"


# ----------------------------------------------------------------- on_error, the gate, costs

RULES = ("seasonal_naive", "last_value", "segment_month_mean", "drift_naive")
ON_ERROR = PolicySpec("on_error", "on_error", per_segment=True)


def test_the_rules_read_the_target_on_the_grid(make_ctx):
    ctx = make_ctx({"rules": RULES})
    preds = ctx.rule_predictions(MONTHLY.parse("2003-12"))
    t, y = ctx.frame[T].to_numpy(), ctx.frame[TARGET].to_numpy()
    a = np.flatnonzero((ctx.frame["city"] == "A").to_numpy())
    a = a[np.argsort(t[a])]
    np.testing.assert_array_equal(preds["seasonal_naive"][a][12:], y[a][:-12])
    np.testing.assert_array_equal(preds["last_value"][a][1:], y[a][:-1])
    rule, mae = ctx.best_rule(MONTHLY.parse("2004-06"))
    assert rule in RULES and mae > 0


def test_the_gate_refuses_a_challenger_that_loses_to_the_rule(make_ctx, params):
    weak = params.train.model_copy(
        update={
            "hyperparameters": {"max_iter": 1, "learning_rate": 0.01},
            "search": params.train.search.model_copy(update={"enabled": False}),
        }
    )
    ctx = make_ctx(
        {"rules": RULES, "gate": GateSpec(max_wape=1.0, min_gain_pct=0.0), "train": weak}
    )
    until = MONTHLY.parse("2004-06")
    model = ctx.validation_scores(until)
    rule, rule_mae = ctx.best_rule(until)
    assert model["mae"] > rule_mae  # one tree of learning rate 0.01 loses to the rule
    passed, reasons = ctx.passes_gate(until)
    assert not passed and rule in reasons[0] and "best rule" in reasons[0]
    strong = make_ctx({"rules": RULES, "gate": GateSpec(max_wape=1.0, min_gain_pct=-1e9)})
    assert strong.passes_gate(until) == (True, [])


def test_an_impossible_gate_refuses_every_better_challenger(make_ctx, replays):
    out, _, _ = replays
    free = {r.policy: r for r in out}
    impossible = make_ctx(
        {"rules": RULES, "gate": GateSpec(max_wape=1.0, min_gain_pct=1e9)}, gate=True
    )
    gated = {r.policy: r for r in run_backtest(impossible)}
    for name in ("every_6", "on_alarm"):
        r = gated[name]
        assert not any(e["promoted"] for e in r.events)
        assert r.fits == 2 + len(r.events)
        assert r.gate_refused == sum(e.get("gate_refused", False) for e in r.events)
    assert free["every_6"].events[0]["promoted"]  # the first challenger was better live ...
    assert gated["every_6"].events[0]["gate_refused"]  # ... and refused here
    anything = make_ctx(
        {"rules": RULES, "gate": GateSpec(max_wape=10.0, min_gain_pct=-1e9)}, gate=True
    )
    for r in run_backtest(anything):  # a gate every model passes changes nothing
        assert (r.periods, r.events, r.fits, r.gate_refused) == (
            free[r.policy].periods,
            free[r.policy].events,
            free[r.policy].fits,
            0,
        )


def test_gate_needs_its_spec_and_rules(make_ctx):
    with pytest.raises(ValueError, match="backtest.gate is true"):
        make_ctx(gate=True)


def test_on_error_replays_with_costs_in_cpu_seconds(make_ctx):
    ctx = make_ctx({"rules": RULES}, policies=[PolicySpec("never", "never"), ON_ERROR])
    never, on_error = run_backtest(ctx)
    cooldown = ctx.spec.min_periods_between
    retrains = [MONTHLY.parse(e["period"]) for e in on_error.events]
    assert all(b - a >= cooldown for a, b in zip(retrains, retrains[1:], strict=False))
    assert all(e["trigger"] in ("error", "rules") for e in on_error.events)
    assert on_error.fits == 2 + len(retrains) + sum(e["promoted"] for e in on_error.events)
    assert on_error.segment_refits == 0  # no segment is routed here
    assert never.cpu_s > 0 and on_error.cpu_s >= never.cpu_s
    summary = summarise([never, on_error], MONTHLY)
    assert summary["on_error"]["segment_refits"] == 0 and "cpu_s" not in summary["on_error"]
    cost = costs([never, on_error], ctx)
    assert cost["policies"]["never"]["cpu_s"] > 0 and cost["policies"]["never"]["fits"] == 2
    assert cost["distinct_fits"]["global"]["count"] == ctx.fitted


def test_a_segment_refit_changes_only_that_segment(routed):
    frame, small, selection = routed
    ctx = replay_data(frame, small, selection)
    cut, later = MONTHLY.parse("2003-12"), MONTHLY.parse("2005-03")
    code = ctx.segment_code("A")
    pos = ctx.positions(MONTHLY.parse("2004-01"), MONTHLY.parse("2005-12"))
    plain = ctx.predict(cut, pos)
    refitted = ctx.predict(cut, pos, ((code, later),))
    is_a = (frame["city"].to_numpy()[pos]) == "A"
    np.testing.assert_array_equal(refitted[~is_a], plain[~is_a])  # B, C and the global model
    assert not np.array_equal(refitted[is_a], plain[is_a])
    rows, y = _series(frame, "A")
    n_fit = int((frame[T].to_numpy()[rows] <= later).sum())
    family, candidate = ctx.routes["A"]
    stat, _ = FittedStat(family, candidate, y[:n_fit], 12).one_step(y)
    glob = ctx.predict_global(cut, rows)
    expected = blend(family, glob, stat)
    expected = np.where(np.isnan(expected), glob, expected)
    np.testing.assert_array_equal(ctx.predict(cut, rows, ((code, later),)), expected)
    assert ("stat", later, code) in ctx.cpu and ctx.cpu["stat", later, code] > 0


def test_on_error_refits_degraded_segments_alone(routed):
    """With a tiny error factor every segment degrades: between full retrains held back
    after a kept challenger, the routed segments are refitted alone and counted apart."""
    frame, small, selection = routed
    spec = small.backtest.model_copy(
        update={"policies": [ON_ERROR], "error_factor": 1e-6, "gate": False}
    )
    result = backtest(frame, small.model_copy(update={"backtest": spec}), selection)
    s = result.metrics["policies"]["on_error"]
    assert s["segment_refits"] == sum(len(e["segments"]) for e in s["segment_events"]) > 0
    assert {n for e in s["segment_events"] for n in e["segments"]} <= set(ROUTED)
    assert all(e["trigger"] == "segments" for e in s["segment_events"])
    assert s["fits"] == 2 + s["retrains"] + s["promotions"]
    assert result.costs["policies"]["on_error"]["cpu_s"] > 0
    assert "cpu_s" not in result.metrics["policies"]["on_error"]
