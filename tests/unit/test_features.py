"""Features are past-only, on a complete grid of periods, split by time."""

import numpy as np
import pandas as pd
import pytest

from panelcast.core.config import ProblemSpec, TimeSpec, WindowSpec, reading_periods_as
from panelcast.core.errors import DataError
from panelcast.core.periods import TARGET
from panelcast.modelling.features import (
    build_features,
    feature_columns,
    grid_of,
    input_columns,
    panel,
    period_of,
    read_rows,
    take_rows,
)

from ..conftest import make_panel

WINDOWS = WindowSpec("2001-01", "2003-12", "2004-01", "2004-12")


def test_lag_and_target_alignment(params, panel_frame):
    feats, _ = build_features(panel_frame, params.problem, params.features, WINDOWS)
    row = feats[(feats["city"] == "B") & (feats["period"] == "2003-06")].iloc[0]
    src = panel_frame.set_index(["city", "year", "month"])["sales"]
    assert row[TARGET] == src[("B", 2003, 6)]
    level = np.log1p(
        np.mean(
            [src[("B", 2003, m)] for m in range(1, 6)] + [src[("B", 2002, m)] for m in range(6, 13)]
        )
    )
    assert row["log_level"] == pytest.approx(level)
    assert row["lag_1"] == pytest.approx(np.log1p(src[("B", 2003, 5)]) - level)
    assert row["lag_12"] == pytest.approx(np.log1p(src[("B", 2002, 6)]) - level)
    assert row["season_position"] == 6


def test_no_feature_uses_the_forecast_month_or_later(params, panel_frame):
    """Perturb every value from the forecast month on: features of that month must not move."""
    feats, _ = build_features(panel_frame, params.problem, params.features, WINDOWS)
    cols = feature_columns(feats, params.problem)
    cutoff = 2003 * 12 + 5  # 2003-06
    t = panel_frame["year"] * 12 + panel_frame["month"] - 1
    future = panel_frame.copy()
    for col in ["sales", "volume", "median", "listings", "inventory"]:
        future.loc[t >= cutoff, col] = future.loc[t >= cutoff, col] * 7 + 1000
    feats2, _ = build_features(future, params.problem, params.features, WINDOWS)
    at = feats["t"] <= cutoff
    pd.testing.assert_frame_equal(feats.loc[at, cols], feats2.loc[at, cols])
    # ... while the target of that month did move: the test can fail
    assert not np.allclose(
        feats.loc[feats["t"] == cutoff, TARGET], feats2.loc[feats2["t"] == cutoff, TARGET]
    )


def test_missing_month_is_inserted_and_counted(params, panel_frame):
    gap = panel_frame.drop(
        index=panel_frame.index[
            (panel_frame.city == "A") & (panel_frame.year == 2002) & (panel_frame.month == 3)
        ]
    )
    grid, inserted = panel(gap, params.problem, [])
    assert inserted == 1
    a = grid[grid.city == "A"]
    assert a["t"].diff().dropna().eq(1).all()
    assert a.loc[a["t"] == 2002 * 12 + 2, "y"].isna().all()


def test_windows_and_summary(params, panel_frame):
    feats, summary = build_features(panel_frame, params.problem, params.features, WINDOWS)
    assert set(feats.loc[feats.window == "test", "period"]) == {
        f"2004-{m:02d}" for m in range(1, 13)
    }
    assert summary["rows_by_window"]["test"]["with_target"] == 36
    assert summary["dropped_no_history"] == 3  # the first month of each segment
    assert summary["features"] == feature_columns(feats, params.problem)


def test_window_without_data_is_an_error(params):
    frame = make_panel(years=3)
    with pytest.raises(ValueError, match="test window .* holds no row"):
        build_features(frame, params.problem, params.features, WINDOWS)


def test_deterministic(params, panel_frame):
    a, _ = build_features(panel_frame, params.problem, params.features, WINDOWS)
    b, _ = build_features(
        panel_frame.sample(frac=1, random_state=1), params.problem, params.features, WINDOWS
    )
    pd.testing.assert_frame_equal(a, b)


def test_period_of_reads_the_time_columns_of_params(params, panel_frame):
    t = period_of(panel_frame, params.problem)
    assert (t == panel_frame["year"] * 12 + panel_frame["month"] - 1).all()


def test_quarterly_features_use_quarters_and_their_season(params):
    problem = ProblemSpec(
        question="q",
        segment="city",
        time=TimeSpec(frequency="Q", year_column="year", period_column="quarter"),
        target="sales",
        horizon=1,
        metric="mae",
        success="s",
    )
    table = pd.DataFrame(
        {
            "city": "A",
            "year": np.repeat(np.arange(2000, 2006), 4),
            "quarter": np.tile([1, 2, 3, 4], 6),
            "sales": np.arange(24) * 3.0 + 10,
        }
    )
    spec = params.features.model_copy(
        update={"lags": [1, 4], "rolling": [2], "level_window": 4, "exogenous": []}
    )
    with reading_periods_as(problem.calendar):
        windows = WindowSpec("2001-Q1", "2003-Q4", "2004-Q1", "2005-Q4")
    feats, summary = build_features(table, problem, spec, windows)
    row = feats[feats["period"] == "2003-Q2"].iloc[0]
    assert row[TARGET] == 10 + 3 * 13 and row["season_position"] == 2
    assert row["lag_4"] == pytest.approx(np.log1p(10 + 3 * 9) - row["log_level"])
    assert summary["rows_by_window"]["test"]["with_target"] == 8


def _groupby_reference(grid, seg, values, k=None, window=None):
    """What the grid helpers replace: pandas' groupby shift and rolling mean."""
    by = pd.Series(values).groupby(grid[seg].to_numpy(), sort=False)
    if k is not None:
        return by.shift(k).to_numpy()
    rolled = by.rolling(window, min_periods=1).mean()
    return rolled.reset_index(level=0, drop=True).sort_index().to_numpy()


def test_grid_shift_and_rolling_mean_are_pandas_groupby_bit_for_bit(params, panel_frame):
    gap = panel_frame.drop(index=panel_frame.index[[5, 6, 40, 41, 42, 100]])
    gap = gap.assign(sales=gap["sales"].where(gap.index % 7 != 0))  # missing values too
    grid = grid_of(gap, params.problem, [])
    frame, _ = panel(gap, params.problem, [])
    y = grid.values["y"]
    for k in (1, 2, 13, 400):
        assert grid.shift(y, k).tobytes() == _groupby_reference(frame, "city", y, k=k).tobytes()
    lag1 = grid.shift(y, 1)
    for window in (1, 3, 12):
        got = grid.rolling_mean(lag1, window)
        assert got.tobytes() == _groupby_reference(frame, "city", lag1, window=window).tobytes()


def test_grid_position_finds_each_row_and_marks_the_others(params, panel_frame):
    grid = grid_of(panel_frame, params.problem, [])
    frame, _ = panel(panel_frame, params.problem, [])
    at = grid.position(frame["city"], frame["t"].to_numpy())
    assert (at == np.arange(len(frame))).all()
    outside = grid.position(pd.Series(["A", "nowhere", "B"]), np.array([-5, 24000, 10**6]))
    assert (outside == -1).all()


def test_a_repeated_segment_and_period_is_refused(params, panel_frame):
    twice = pd.concat([panel_frame, panel_frame.iloc[[3]]], ignore_index=True)
    with pytest.raises(DataError, match="1 row.* repeat"):
        build_features(twice, params.problem, params.features, WINDOWS)


def test_features_of_a_repeated_exogenous_name_are_one_column(params, panel_frame):
    spec = params.features.model_copy(update={"exogenous": ["median", "volume", "median"]})
    feats, _ = build_features(panel_frame, params.problem, spec, WINDOWS)
    assert [c for c in feats.columns if c.startswith("exo_")] == ["exo_median", "exo_volume"]


def test_feature_table_text_is_one_object_per_distinct_value(params, panel_frame):
    feats, _ = build_features(panel_frame, params.problem, params.features, WINDOWS)
    # one string object per distinct period, segment, window, not one per row
    for col in ("city", "period", "window"):
        assert len({id(v) for v in feats[col]}) == feats[col].nunique()


def test_take_rows_is_iloc_then_columns(params, panel_frame):
    feats, _ = build_features(panel_frame, params.problem, params.features, WINDOWS)
    cols = ["segment", "lag_1", "season_position", "city", "target"]
    rows = np.array([5, 0, 17, 17, 3])
    expected = feats.iloc[rows][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(take_rows(feats, rows, cols), expected, check_exact=True)
    pd.testing.assert_frame_equal(
        take_rows(feats, None, cols), feats[cols].reset_index(drop=True), check_exact=True
    )


def test_read_rows_is_read_parquet_of_the_rows_kept(params, panel_frame, tmp_path, monkeypatch):
    import pyarrow.compute as pc

    import panelcast.modelling.features as features_module

    feats, _ = build_features(panel_frame, params.problem, params.features, WINDOWS)
    path = tmp_path / "features.parquet"
    feats.to_parquet(path, index=False)
    monkeypatch.setattr(features_module, "READ_BATCH", 7)  # many batches, some empty
    pd.testing.assert_frame_equal(read_rows(path, None), pd.read_parquet(path), check_exact=True)
    cols = ["city", "t", "lag_1", "segment"]
    kept = (pc.field("window") == "test") & (pc.field("city") != "B")
    got = read_rows(path, cols, kept, by=("window",))
    want = feats.loc[(feats["window"] == "test") & (feats["city"] != "B"), cols]
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_exact=True)
    # every category of the file, in its order, though segment B was filtered out
    assert list(got["segment"].cat.categories) == ["A", "B", "C"]


def test_input_columns_are_those_build_features_reads(params, panel_frame):
    cols = input_columns(params.problem, params.features)
    a, _ = build_features(panel_frame, params.problem, params.features, WINDOWS)
    b, _ = build_features(panel_frame[cols], params.problem, params.features, WINDOWS)
    pd.testing.assert_frame_equal(a, b)
