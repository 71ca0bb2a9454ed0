"""Sliding-window split-conformal intervals: no look-ahead, the window, the coverage."""

import numpy as np
import pandas as pd
import pytest

from panelcast.core.errors import DataError
from panelcast.modelling.intervals import (
    RESIDUAL,
    conformal_offsets,
    interval,
    latest_offsets,
    min_residuals,
    residual_table,
    rolling_bounds,
    rolling_coverage,
    rolling_offsets,
)
from panelcast.pipeline.evaluate import calibrated_intervals, cv_residuals

LEVELS = [80, 95]


def residuals(periods=60, per_period=20, seed=0) -> pd.DataFrame:
    """A residual table of ``per_period`` rows in each of ``periods`` periods."""
    rng = np.random.default_rng(seed)
    t = np.repeat(np.arange(periods, dtype=np.int64), per_period)
    return pd.DataFrame({"t": t, RESIDUAL: rng.normal(0, 0.2, len(t))})


def test_offsets_of_a_period_never_use_residuals_at_or_after_it():
    table = residuals()
    before = rolling_offsets(table, range(30, 60), 12, LEVELS)
    future = table.copy()
    late = future["t"] >= 45
    future.loc[late, RESIDUAL] = future.loc[late, RESIDUAL] * 50 + 3
    after = rolling_offsets(future, range(30, 60), 12, LEVELS)
    assert {p: before[p] for p in range(30, 46)} == {p: after[p] for p in range(30, 46)}
    # the first period that knows the changed residuals moves
    assert before[46] != after[46]


def test_the_window_keeps_only_the_last_periods():
    table, window, p = residuals(), 12, 40
    got = rolling_offsets(table, [p], window, LEVELS)[p]
    inside = table[(table["t"] >= p - window) & (table["t"] < p)]
    assert got == conformal_offsets(inside[RESIDUAL].to_numpy(), LEVELS)
    older = table.copy()
    older.loc[older["t"] < p - window, RESIDUAL] = 10.0
    assert rolling_offsets(older, [p], window, LEVELS)[p] == got
    edge = table.copy()
    edge.loc[edge["t"] == p - window, RESIDUAL] = 10.0
    assert rolling_offsets(edge, [p], window, LEVELS)[p] != got


def test_a_level_with_too_few_residuals_gets_no_interval_and_is_not_counted():
    table = residuals(periods=10, per_period=5)
    # 80 % needs 10 residuals (2 periods of 5), 95 % needs 39 (8 periods)
    assert (min_residuals([80]), min_residuals([95]), min_residuals(LEVELS)) == (10, 39, 39)
    offsets = rolling_offsets(table, range(10), 10, LEVELS)
    assert sorted(offsets) == list(range(2, 10))
    assert [p for p in offsets if 95 in offsets[p]] == [8, 9]
    t = np.repeat(np.arange(10), 3)
    forecast = np.full(len(t), 100.0)
    bounds = rolling_bounds(forecast, t, offsets, LEVELS)
    assert list(bounds.columns) == ["lower_80", "upper_80", "lower_95", "upper_95"]
    assert bounds["lower_80"].isna().tolist() == (t < 2).tolist()
    assert bounds["upper_95"].isna().tolist() == (t < 8).tolist()
    actual = np.where(t == 9, np.nan, 100.0)
    got = rolling_coverage(actual, forecast, t, offsets, LEVELS)
    assert (got["80"]["n"], got["80"]["uncalibrated"]) == (21, 6)
    assert (got["95"]["n"], got["95"]["uncalibrated"]) == (3, 24)
    assert got["95"]["coverage"] == 1.0
    none = rolling_coverage(actual, forecast, t, {}, LEVELS)
    assert none["80"]["coverage"] is None and not none["80"]["within_target"]


def test_bounds_are_the_interval_of_each_period_offsets():
    table = residuals()
    offsets = rolling_offsets(table, [50, 51], 12, LEVELS)
    t = np.array([50, 51, 50])
    forecast = np.array([10.0, 200.0, 3000.0])
    bounds = rolling_bounds(forecast, t, offsets, LEVELS)
    for i in range(3):
        lower, upper = interval(forecast[i : i + 1], offsets[int(t[i])][95])
        assert bounds["lower_95"].iloc[i] == lower[0] and bounds["upper_95"].iloc[i] == upper[0]


def test_coverage_on_exchangeable_residuals_is_close_to_nominal():
    rng = np.random.default_rng(42)
    segments, periods, window = 40, 250, 24
    t = np.tile(np.arange(periods, dtype=np.int64), segments)
    forecast = rng.uniform(20, 2000, len(t))
    actual = np.expm1(np.log1p(forecast) + rng.standard_t(5, len(t)) * 0.15)
    table = residual_table(t, actual, forecast)
    test = t >= window
    offsets = rolling_offsets(table, np.unique(t[test]), window, LEVELS)
    got = rolling_coverage(actual[test], forecast[test], t[test], offsets, LEVELS)
    assert got["80"]["n"] == int(test.sum()) > 9000
    for level in LEVELS:
        assert abs(got[str(level)]["coverage"] - level / 100) <= 0.02, got
        assert got[str(level)]["within_target"]
    assert got["80"]["target_points"] == 3.0 and got["95"]["target_points"] == 2.0
    assert got["80"]["mean_width"] < got["95"]["mean_width"]


def test_coverage_far_from_nominal_misses_the_target_given_by_the_caller():
    table = residuals(periods=30, per_period=40)
    offsets = rolling_offsets(table, [29], 12, [80])
    t = np.full(100, 29)
    forecast = np.full(100, 100.0)
    actual = np.full(100, 1000.0)  # every actual far above its interval
    got = rolling_coverage(actual, forecast, t, offsets, [80], tolerance={80: 50.0})
    assert got["80"]["coverage"] == 0.0 and got["80"]["target_points"] == 50.0
    assert not got["80"]["within_target"]


def test_latest_offsets_are_the_conformal_offsets_of_the_last_periods():
    table, window = residuals(), 24
    last = table[table["t"] >= 60 - window]
    want = conformal_offsets(last[RESIDUAL].to_numpy(), LEVELS)
    assert latest_offsets(table, window, LEVELS) == want
    assert latest_offsets(table, window, LEVELS, before=60) == want
    assert (
        latest_offsets(table, window, LEVELS, before=50)
        == rolling_offsets(table, [50], window, LEVELS)[50]
    )


def test_latest_offsets_refuse_too_few_residuals_naming_the_counts():
    with pytest.raises(ValueError, match=r"hold 20 residuals.*levels \[95\] need at least 39"):
        latest_offsets(residuals(), 1, LEVELS)
    assert set(latest_offsets(residuals(), 1, LEVELS, minimum=1)) == set(LEVELS)
    with pytest.raises(ValueError, match="missing \\['residual'\\]"):
        latest_offsets(pd.DataFrame({"t": [1]}), 1, LEVELS)
    with pytest.raises(ValueError, match="window must be a positive"):
        rolling_offsets(residuals(), [5], 0, LEVELS)


def test_residual_table_leaves_out_unknown_rows():
    got = residual_table(np.array([3, 1, 2]), np.array([9.0, np.nan, 4.0]), [9.0, 1.0, np.nan])
    assert got["t"].tolist() == [3] and got[RESIDUAL].tolist() == [0.0]


def cv_frame(t, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    city = np.tile(["A", "B", "C", "D"], len(t))
    t = np.repeat(t, 4)
    target = rng.uniform(50, 500, len(t))
    return pd.DataFrame({"city": city, "t": t, "target": target, "forecast": target * 1.05})


def test_cv_forecasts_in_the_test_window_or_repeated_are_refused():
    name = "models/segments/cv_forecasts.parquet"
    with pytest.raises(DataError, match="0 repeated .* 4 row\\(s\\) at or after"):
        cv_residuals(cv_frame(np.arange(90, 101)), "city", 100, name)
    twice = cv_frame(np.arange(80, 90))
    with pytest.raises(DataError, match="4 repeated"):
        cv_residuals(pd.concat([twice, twice.tail(4)]), "city", 100, name)
    with pytest.raises(DataError, match="missing column\\(s\\) \\['forecast'\\]"):
        cv_residuals(twice.drop(columns="forecast"), "city", 100, name)
    assert len(cv_residuals(None, "city", 100, name)) == 0


def test_evaluate_calibrates_each_test_period_on_the_periods_before_it(params):
    window = params.predict.calibration_periods
    levels = list(params.predict.interval_levels)
    rng = np.random.default_rng(1)
    cv = cv_frame(np.arange(1000 - window, 1000))
    cv["forecast"] = cv["target"] * np.exp(rng.normal(0, 0.1, len(cv)))
    test = cv_frame(np.arange(1000, 1006), seed=2).rename(columns={"forecast": "prediction"})
    test["period"] = test["t"].astype(str)
    bounds, section, over_time = calibrated_intervals(test, cv, params)
    assert section["calibration_periods"] == window
    assert section["residuals"] == {"cv": len(cv), "test": len(test)}
    assert section["test_periods"] == 6
    assert section["calibrated_periods"] == {str(level): 6 for level in levels}
    assert list(section["levels"]) == [str(level) for level in levels]
    # the first test period knows the CV residuals only
    first = conformal_offsets(np.log1p(cv["target"]) - np.log1p(cv["forecast"]), levels)
    lower, upper = interval(test["prediction"].iloc[:1], first[levels[0]])
    assert bounds[f"lower_{levels[0]}"].iloc[0] == lower[0]
    assert bounds[f"upper_{levels[0]}"].iloc[0] == upper[0]
    assert over_time["period"].tolist() == [str(p) for p in range(1000, 1006)]
    assert (over_time["n"] == 4).all()
    # without CV forecasts the first test period has no calibration
    _, alone, _ = calibrated_intervals(test, None, params)
    assert alone["residuals"]["cv"] == 0
    assert all(n < 6 for n in alone["calibrated_periods"].values())
