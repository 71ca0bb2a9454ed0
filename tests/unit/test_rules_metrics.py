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
