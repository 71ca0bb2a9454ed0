"""Rules and metrics on tiny frames with known answers."""

import numpy as np
import pandas as pd
import pytest

from panelcast.core.config import GateSpec
from panelcast.modelling.evaluation import gain_pct, gate
from panelcast.modelling.features import panel
from panelcast.modelling.metrics import scores
from panelcast.modelling.rules import predict_rules


def test_scores_known_values():
    s = scores(np.array([10.0, 20.0, np.nan, 30.0]), np.array([12.0, 18.0, 5.0, 33.0]))
    assert s["n"] == 3
    assert s["mae"] == pytest.approx(7 / 3, rel=1e-5)
    assert s["rmse"] == pytest.approx(np.sqrt(17 / 3), rel=1e-5)
    assert s["wape"] == pytest.approx(7 / 60, rel=1e-5)


def test_scores_refuses_missing_predictions():
    with pytest.raises(ValueError, match="missing values"):
        scores(np.array([1.0, 2.0]), np.array([1.0, np.nan]))


def test_scores_refuses_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        scores(np.array([1.0, 2.0]), np.array([1.0]))


def test_rules_on_a_known_panel(params, panel_frame):
    grid, _ = panel(panel_frame, params.problem, [])
    train = grid["t"] < 2003 * 12
    preds, fell_back = predict_rules(
        grid, params.problem, ["seasonal_naive", "last_value", "segment_month_mean"], train
    )
    i = grid.index[(grid.city == "A") & (grid.t == 2003 * 12 + 4)][0]
    assert preds.loc[i, "seasonal_naive"] == grid.loc[i - 12, "y"]
    assert preds.loc[i, "last_value"] == grid.loc[i - 1, "y"]
    same = grid[(grid.city == "A") & (grid.t % 12 == 4) & train]["y"].mean()
    assert preds.loc[i, "segment_month_mean"] == pytest.approx(same)
    # the first year has no seasonal value: it falls back and is counted
    assert fell_back["seasonal_naive"].sum() == 3 * 12
    assert preds.notna().all().all()


def test_unknown_rule(params):
    grid = pd.DataFrame({"city": ["A"], "t": [0], "y": [1.0]})
    with pytest.raises(ValueError, match="unknown rule"):
        predict_rules(grid, params.problem, ["magic"], grid["t"] >= 0)


def test_gain_and_gate():
    assert gain_pct(90.0, 100.0) == pytest.approx(10.0)
    ok, reasons = gate({"wape": 0.05}, 10.0, GateSpec(max_wape=0.1, min_gain_pct=5.0))
    assert ok and not reasons
    ok, reasons = gate({"wape": 0.2}, 1.0, GateSpec(max_wape=0.1, min_gain_pct=5.0))
    assert not ok and len(reasons) == 2 and "WAPE" in reasons[0]


@pytest.mark.parametrize("frequency, season", [("Q", 4), ("Y", 1)])
def test_seasonal_rules_follow_the_season_of_the_calendar(frequency, season):
    from panelcast.core.config import ProblemSpec, TimeSpec

    time = TimeSpec(
        frequency=frequency, year_column="year", period_column="quarter" if season > 1 else None
    )
    problem = ProblemSpec(
        question="q", segment="city", time=time, target="y", horizon=1, metric="mae", success="s"
    )
    grid = pd.DataFrame({"city": "A", "t": np.arange(20), "y": np.arange(20) * 10.0 + 5})
    preds, fell_back = predict_rules(
        grid, problem, ["seasonal_naive", "last_value"], grid["t"] < 12
    )
    assert preds.loc[10, "seasonal_naive"] == grid.loc[10 - season, "y"]
    assert preds.loc[10, "last_value"] == grid.loc[9, "y"]
    assert fell_back["seasonal_naive"].sum() == season


def _rules_with_pandas(grid, seg, rules, train, s):
    """The rules as pandas groupby operations: what the array version must equal."""

    def lag(k):
        return grid.groupby(seg, sort=False)["y"].shift(k)

    position = grid["t"] % s
    month_means = grid[train].groupby([grid[seg], position])["y"].mean()
    keys = pd.MultiIndex.from_arrays([grid[seg], position])
    recent = sum(lag(k) for k in (1, 2, 3))
    season_ago = sum(lag(k + s) for k in (1, 2, 3))
    impl = {
        "seasonal_naive": lag(s),
        "last_value": lag(1),
        "segment_month_mean": pd.Series(month_means.reindex(keys).to_numpy(), index=grid.index),
        "drift_naive": lag(s) * (recent / season_ago).where(season_ago > 0),
    }
    fallback = lag(1).fillna(grid[seg].map(grid[train].groupby(seg)["y"].mean()))
    fallback = fallback.fillna(float(grid.loc[train, "y"].mean()))
    out, fell_back = pd.DataFrame({seg: grid[seg], "t": grid["t"]}), pd.DataFrame(index=grid.index)
    for rule in rules:
        pred = impl[rule].replace([np.inf, -np.inf], np.nan)
        fell_back[rule] = pred.isna()
        out[rule] = pred.fillna(fallback).clip(lower=0)
    return out, fell_back


@pytest.mark.parametrize("shuffle", [False, True])
def test_rules_are_their_pandas_definition_bit_for_bit(params, panel_frame, shuffle):
    table = panel_frame.drop(index=panel_frame.index[[4, 30, 31, 90]])  # gaps in the grid
    table = table.assign(sales=table["sales"].where(table.index % 9 != 0))
    table.loc[table.index[:12], "sales"] = 0.0  # zero growth denominators
    grid, _ = panel(table, params.problem, [])
    if shuffle:  # any row order: the lags follow each segment's rows in order
        grid = grid.sample(frac=1, random_state=2)
    rules = ["seasonal_naive", "last_value", "segment_month_mean", "drift_naive"]
    train = grid["t"] < 2003 * 12
    got = predict_rules(grid, params.problem, rules, train)
    want = _rules_with_pandas(grid, "city", rules, train, 12)
    for a, b in zip(got, want, strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    for rule in rules:
        assert got[0][rule].to_numpy().tobytes() == want[0][rule].to_numpy().tobytes()
