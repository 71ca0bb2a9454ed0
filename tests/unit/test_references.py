"""The statistical references of the baseline stage: per-segment statsforecast models fitted
on the training window, scored one step ahead on the rules' test rows, never rules."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd
import pytest
import yaml

from panelcast.core.config import ParamsError, params_from_dict
from panelcast.core.periods import TARGET, WINDOW, T
from panelcast.modelling.features import build_features
from panelcast.modelling.statistical import FittedStat, select
from panelcast.pipeline.baseline import baseline
from panelcast.pipeline.evaluate import checked_rule_scores

from ..conftest import ROOT, make_panel

FAMILIES = ["auto_ets", "theta"]  # AutoARIMA behaves the same and costs more


def raw_params(statistical: list[str] | None = None) -> dict:
    """The real params.yaml on a 5-year synthetic panel: train 2000-2003, test 2004."""
    data = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    data["windows"] = {
        "train_start": "2000-01",
        "train_end": "2003-12",
        "test_start": "2004-01",
        "test_end": "2004-12",
    }
    data["features"]["lags"] = [1, 12]
    data["features"]["rolling"] = [3]
    data["features"]["exogenous"] = []
    if statistical is None:
        data["baseline"].pop("statistical", None)
    else:
        data["baseline"]["statistical"] = statistical
    return data


def run(table: pd.DataFrame, statistical: list[str]) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    params = params_from_dict(raw_params(statistical))
    features, _ = build_features(table, params.problem, params.features, params.windows)
    features = features[[params.problem.segment_column, T, WINDOW, TARGET]]
    preds, result = baseline(table, features, params)
    return preds, result, features


@pytest.fixture(scope="module")
def two_segments() -> pd.DataFrame:
    return make_panel(segments=("A", "B"), years=5)[["city", "year", "month", "sales"]]


@pytest.fixture(scope="module")
def scored(two_segments):
    return run(two_segments, FAMILIES)


def test_scores_are_the_mae_of_each_segments_one_step_forecasts(two_segments, scored):
    preds, result, features = scored
    fit_start = int(features.loc[features[WINDOW] == "train", T].min())
    errors = {family: [] for family in FAMILIES}
    for name, part in two_segments.groupby("city"):
        t = (part["year"] * 12 + part["month"] - 1).to_numpy()
        y = part["sales"].to_numpy(dtype=float)
        series = y[t >= fit_start]  # from the first training row of the feature table
        n_fit = int(((t >= fit_start) & (t <= 2003 * 12 + 11)).sum())
        test = (preds["city"] == name) & (preds[WINDOW] == "test")
        for family in FAMILIES:
            spec = select(family, series[:n_fit], 12, "ZZZ")
            pred, _ = FittedStat(family, spec, series[:n_fit], 12).one_step(series)
            np.testing.assert_allclose(preds.loc[test, family], pred[n_fit:])
            errors[family].extend(np.abs(pred[n_fit:] - series[n_fit:]))
    for family in FAMILIES:
        s = result["statistical"][family]
        assert s["n"] == result["rules"]["seasonal_naive"]["n"] == 24
        assert s["mae"] == pytest.approx(np.mean(errors[family]), rel=1e-5)
        assert s["fallbacks"] == 0
    best = min(FAMILIES, key=lambda f: result["statistical"][f]["mae"])
    assert result["best_statistical"] == best
    # the forecasts are columns of the rule table, missing outside the test window
    assert preds[FAMILIES][preds[WINDOW] != "test"].isna().all().all()
    assert list(preds.columns).index("theta") < list(preds.columns).index(TARGET)


def test_a_segment_too_short_to_fit_takes_the_seasonal_naive_rule_and_is_counted(
    two_segments, caplog
):
    late = make_panel(segments=("C",), years=5)[["city", "year", "month", "sales"]]
    late = late[late["year"] * 12 + late["month"] >= 2003 * 12 + 11]  # 2 training months
    table = pd.concat([two_segments, late], ignore_index=True)
    with caplog.at_level(logging.WARNING, logger="panelcast.modelling.references"):
        preds, result, _ = run(table, FAMILIES)
    short = (preds["city"] == "C") & (preds[WINDOW] == "test")
    assert short.sum() == 12
    for family in FAMILIES:
        assert result["statistical"][family]["fallbacks"] == 12
        assert result["statistical"][family]["n"] == result["best"]["n"] == 36
        np.testing.assert_array_equal(preds.loc[short, family], preds.loc[short, "seasonal_naive"])
        assert preds.loc[~short & (preds[WINDOW] == "test"), family].notna().all()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("theta: 12 test row" in m and "C (NotImplementedError" in m for m in warned), warned


def test_a_forecast_never_reads_its_own_period_or_a_later_one(two_segments):
    """A missing test value is carried forward, not interpolated from the next value."""
    table = two_segments.copy()
    t = table["year"] * 12 + table["month"] - 1
    a = table["city"] == "A"
    table.loc[a & (t == 2004 * 12 + 4), "sales"] = np.nan
    preds, _, _ = run(table, ["theta"])
    table.loc[a & (t == 2004 * 12 + 5), "sales"] *= 3  # the period after the gap
    again, _, _ = run(table, ["theta"])
    upto = (preds["city"] == "A") & (preds[T] <= 2004 * 12 + 5)
    np.testing.assert_array_equal(again.loc[upto, "theta"], preds.loc[upto, "theta"])
    later = (preds["city"] == "A") & (preds[T] > 2004 * 12 + 5)
    assert not np.allclose(again.loc[later, "theta"], preds.loc[later, "theta"])


def test_the_best_rule_is_chosen_among_the_rules_only(two_segments, scored):
    preds, result, _ = scored
    rules_only, alone, _ = run(two_segments, [])
    assert "statistical" not in alone and "best_statistical" not in alone
    for key in ("rules", "best_rule", "best", "window", "metric"):
        assert result[key] == alone[key]
    assert result["best_rule"] in result["rules"]
    # a reference beats every rule on this smooth panel, and still is not the best rule
    assert result["statistical"][result["best_statistical"]]["mae"] < result["best"]["mae"]
    pd.testing.assert_frame_equal(preds.drop(columns=FAMILIES), rules_only)
    # the evaluate stage recomputes the rules from this table and finds the same best rule
    best, _ = checked_rule_scores(preds, result, "mae", "metrics/baseline.json")
    assert best == alone["best_rule"]


def test_the_references_are_byte_reproducible(two_segments, scored, tmp_path):
    preds, result, _ = scored
    again, result_again, _ = run(two_segments, FAMILIES)
    assert result_again == result
    preds.to_parquet(tmp_path / "a.parquet")
    again.to_parquet(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_params_refuse_an_unknown_family_and_a_family_listed_twice():
    assert params_from_dict(raw_params(None)).baseline.statistical == []
    chosen = params_from_dict(raw_params(["auto_arima", "theta"])).baseline.statistical
    assert chosen == ["auto_arima", "theta"]
    for unknown in ("prophet", "seasonal_naive"):  # seasonal_naive is a rule
        with pytest.raises(ParamsError, match=r"baseline\.statistical.*" + unknown):
            params_from_dict(raw_params(["auto_ets", unknown]))
    with pytest.raises(ParamsError, match=r"baseline\.statistical.*'theta'.*more than once"):
        params_from_dict(raw_params(["theta", "auto_ets", "theta"]))
