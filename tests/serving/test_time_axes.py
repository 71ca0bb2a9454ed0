"""The service on other time axes than the monthly Texas panel: a single daily (or weekly)
series with a date column in a declared format, and a quarterly panel in year + quarter
columns. A real ``panelcast serve`` answers them; the fast path gives the reference path's
digits."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from panelcast.core.periods import SEGMENT_FEATURE
from panelcast.modelling.features import next_period_features
from panelcast.serving.forecaster import (
    Forecaster,
    RequestRowsError,
    UnknownSegmentError,
    merge_history,
)
from panelcast.serving.protocol import records_frame

from .bundle import batch_predict, request, serving

BOUNDS = ["lower_80", "upper_80", "lower_95", "upper_95"]


def load(bundle) -> Forecaster:
    fc = Forecaster.load(bundle["params"])
    fc.warm_up()
    return fc


@pytest.fixture(scope="module")
def daily(daily_bundle):
    return load(daily_bundle)


@pytest.fixture(scope="module")
def weekly(weekly_bundle):
    return load(weekly_bundle)


@pytest.fixture(scope="module")
def quarterly(quarterly_bundle):
    return load(quarterly_bundle)


@pytest.fixture(scope="module")
def daily_server(daily_bundle):
    yield from serving(daily_bundle["params_file"])


@pytest.fixture(scope="module")
def quarterly_server(quarterly_bundle):
    yield from serving(quarterly_bundle["params_file"])


def time_cells(fc: Forecaster, t: int, rng: np.random.Generator) -> dict:
    """The time columns of period ``t`` as a client writes them (a date column in its
    declared format, any day of a week; year and period integers)."""
    time = fc.params.problem.time
    cal = time.calendar
    if time.column is not None:
        if time.frequency in ("D", "W"):  # Python dates: pandas 2 stops in 2262, these don't
            step = dt.timedelta(days=t) if time.frequency == "D" else dt.timedelta(weeks=t)
            stamp = cal.start(0).to_pydatetime() + step
        else:
            stamp = cal.start(t)
        if time.frequency == "W":
            stamp += dt.timedelta(days=int(rng.integers(0, 7)))
        return {time.column: stamp.strftime(time.format or "%Y-%m-%d")}
    per = {"M": 12, "Q": 4}[time.frequency]
    return {time.year_column: t // per, time.period_column: t % per + 1}


def last_period(fc: Forecaster, segment: str) -> int:
    mine = fc.state[fc.state[fc.segment].astype(str) == segment]
    return int(fc.fast.last[fc.fast.index[segment]]) if len(mine) else 0


def random_rows(fc: Forecaster, rng: np.random.Generator) -> tuple[list[dict], list[str]]:
    """JSON rows of 1-3 segments (stored periods overridden, later periods with gaps,
    missing values; a single series' rows without their series column) and segments
    asked for their stored history only."""
    problem = fc.params.problem
    values = [problem.target, *fc.params.features.exogenous]
    segs = list(rng.choice(fc.segments, size=min(len(fc.segments), int(rng.integers(1, 4)))))
    rows = []
    for s in dict.fromkeys(str(s) for s in segs):
        last = last_period(fc, s)
        periods = set()
        for _ in range(int(rng.integers(0, 4))):
            kind = rng.random()
            if kind < 0.4:
                periods.add(last - int(rng.integers(0, 30)))
            elif kind < 0.8:
                periods.add(last + int(rng.integers(1, 4)))
            else:
                periods.add(last + int(rng.integers(10, 20)))
        for t in sorted(periods):
            row = {} if problem.single_series and rng.random() < 0.7 else {fc.segment: s}
            row.update(time_cells(fc, t, rng))
            for c in values:
                r = rng.random()
                row[c] = None if r < 0.15 else round(float(rng.uniform(0, 50)), 2)
            rows.append(row)
    extra = [s for s in fc.segments if rng.random() < 0.3]
    if not rows and not extra:
        extra = segs[:1]
    return rows, extra


CASES = ["daily", "weekly", "quarterly"]


@pytest.mark.parametrize("case", CASES)
def test_fast_path_equals_the_reference(case, request):
    fc = request.getfixturevalue(case)
    fast, p = fc.fast, fc.params
    assert fast.fast_ok
    rng = np.random.default_rng(5)
    taken = 0
    for i in range(120):
        rows, extra = random_rows(fc, rng)
        frame = records_frame(rows) if rows else None
        expected = fc.forecast(frame, extra)
        got = fc.forecast_fast(frame, extra)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
        if frame is None:
            continue
        # the JSON rows' shortcut reads the same periods and values as the contract's path
        checked = fc.validate_rows(frame)
        ref = fast.rows_from_frame(checked)
        arrays = fast.rows_from_records(rows)
        assert arrays is not None, rows  # valid rows take the shortcut
        taken += 1
        assert np.array_equal(arrays.seg, ref.seg) and np.array_equal(arrays.t, ref.t)
        assert np.array_equal(arrays.values, ref.values, equal_nan=True)
        # the features themselves, column by column
        wanted = set(extra) | set(checked[fc.segment])
        history = merge_history(fc.state[fc.state[fc.segment].isin(wanted)], checked, p)
        ref_features = next_period_features(history, p.problem, p.features, fc.segments)
        X = fast.feature_matrix(fast.prepare(arrays, [fast.index[s] for s in extra]))
        for j, name in enumerate(fast.features):
            col = ref_features[name]
            col = col.cat.codes.to_numpy(float) if name == SEGMENT_FEATURE else col
            assert np.array_equal(X[:, j], np.asarray(col, float), equal_nan=True), (i, name)
    assert taken > 50


def odd_rows(fc: Forecaster, rng: np.random.Generator) -> list[dict]:
    """Rows the contract may refuse: bad dates and periods, wrong types, unknown or
    missing segments, duplicates, the future."""
    rows, _ = random_rows(fc, rng)
    if not rows:
        rows = [dict(time_cells(fc, last_period(fc, fc.segments[0]) + 1, rng))]
        rows[0][fc.params.problem.target] = 1.0
    time = fc.params.problem.time
    for row in rows:
        action = int(rng.integers(0, 12))
        if action == 0 and time.column:
            row[time.column] = str(rng.choice(["31/02/2023", "2023-01-05", "", "x", "5"]))
        elif action == 0:
            row[time.period_column] = int(rng.choice([0, 5, 13, 54]))
        elif action == 1:
            key = time.column or time.year_column
            row[key] = [None, 3, 2.5, True, "2020"][int(rng.integers(0, 5))]
        elif action == 2:
            row[fc.segment] = str(rng.choice(["Atlantis", "", fc.params.problem.target]))
        elif action == 3:
            row.pop(str(rng.choice(sorted(row))))
        elif action == 4:
            row.update(time_cells(fc, 2300 * 365 // {"D": 1, "W": 7, "Q": 91}[time.frequency], rng))
        elif action == 5:
            row[fc.params.problem.target] = float(rng.choice([-1.0, 1e300, 5]))
    if rng.random() < 0.2:
        rows.append(dict(rows[0]))
    return rows


@pytest.mark.parametrize("case", CASES)
def test_shortcut_accepts_only_what_the_contract_accepts(case, request):
    fc = request.getfixturevalue(case)
    fast = fc.fast
    rng = np.random.default_rng(9)
    outcomes = {"shortcut": 0, "refused": 0}
    for _ in range(300):
        rows = odd_rows(fc, rng)
        arrays = fast.rows_from_records(rows)
        try:
            checked = fc.validate_rows(records_frame(rows))
        except (RequestRowsError, UnknownSegmentError):
            assert arrays is None, rows
            outcomes["refused"] += 1
            continue
        if arrays is not None:
            outcomes["shortcut"] += 1
            ref = fast.rows_from_frame(checked)
            assert np.array_equal(arrays.seg, ref.seg) and np.array_equal(arrays.t, ref.t)
            assert np.array_equal(arrays.values, ref.values, equal_nan=True)
    assert outcomes["shortcut"] > 20 and outcomes["refused"] > 20, outcomes


def test_a_week_is_read_from_any_of_its_days_and_once_per_request(weekly):
    """A date column declared ``datetime`` in the contract takes dates as text; two dates
    of one week are one period sent twice (422)."""
    fast = weekly.fast
    monday = weekly.params.problem.calendar.parse("2023-01-02")
    row = {"date": "04/01/2023", "load": 1000.0, "temp": 3.0}
    assert fast.rows_from_records([row]).t.tolist() == [monday]
    twice = [row, dict(row, date="02/01/2023")]
    assert fast.rows_from_records(twice) is None
    with pytest.raises(RequestRowsError) as info:
        weekly.validate_rows(records_frame(twice))
    assert [(f.column, f.rule) for f in info.value.failures] == [("date", "unique_period")]
    with pytest.raises(RequestRowsError) as info:
        weekly.validate_rows(records_frame([dict(row, date="2023-01-04")]))
    (failure,) = info.value.failures
    assert (failure.column, failure.rule, failure.examples) == (
        "date",
        "time_readable",
        ["2023-01-04"],
    )


# --------------------------------------------------------------------------- over HTTP


def test_daily_single_series_over_http(daily_server, daily, daily_bundle, tmp_path):
    url = daily_server.url
    status, body = request(url + "/v2/health/ready")
    assert status == 200 and body["segment"] == "series"
    status, meta = request(url + "/v2/models/panelcast")
    assert status == 200 and meta["segment"] == "series" and meta["single_series"] is True
    assert (meta["target"], meta["target_label"], meta["unit"]) == (
        "load",
        "Electricity load",
        "MWh",
    )
    assert meta["time"] == {
        "frequency": "D",
        "unit": "day",
        "columns": ["date"],
        "format": "%d/%m/%Y",
        "season_length": 7,
    }
    assert meta["last_period"] == "2022-12-31"
    # the batch forecast, named after the target
    batch = pd.read_parquet(daily_bundle["params"].paths.forecasts)
    status, body = request(url + "/forecasts/load")
    assert status == 200 and body["period"] == "2023-01-01" == batch["period"].iloc[0]
    assert body["forecast"] == float(batch["forecast"].iloc[0])
    status, stored = request(url + "/predict", "POST", {"segments": ["load"]})
    assert status == 200 and stored["forecasts"][0]["forecast"] == body["forecast"]
    # rows without the series column; the same with it
    rows = [
        {"date": "01/01/2023", "load": 1100.0, "temp": 3.0},
        {"date": "02/01/2023", "load": None, "temp": 4.5},
    ]
    status, online = request(url + "/predict", "POST", {"rows": rows})
    assert status == 200, online
    (record,) = online["forecasts"]
    assert (record["series"], record["period"]) == ("load", "2023-01-03")
    expected = daily.forecast(records_frame(rows))
    assert record["forecast"] == float(expected["forecast"].iloc[0])
    for name in BOUNDS:
        assert record[name] == float(expected[name].iloc[0])
    named = [dict(r, series="load") for r in rows]
    assert request(url + "/predict", "POST", {"rows": named})[1]["forecasts"] == [record]
    infer = {
        "inputs": [
            {"name": "date", "datatype": "BYTES", "shape": [2], "data": [r["date"] for r in rows]},
            {"name": "load", "datatype": "FP64", "shape": [2], "data": [r["load"] for r in rows]},
            {"name": "temp", "datatype": "FP64", "shape": [2], "data": [r["temp"] for r in rows]},
        ]
    }
    status, answer = request(url + "/v2/models/panelcast/infer", "POST", infer)
    assert status == 200, answer
    outputs = {o["name"]: o["data"] for o in answer["outputs"]}
    assert outputs["series"] == ["load"] and outputs["period"] == ["2023-01-03"]
    assert outputs["forecast"] == [record["forecast"]]
    # the batch CLI on the same rows (a CSV, dates as the params declare them)
    source, out = tmp_path / "rows.csv", tmp_path / "out.parquet"
    pd.DataFrame(rows).to_csv(source, index=False)
    proc = batch_predict(daily_bundle["params_file"], source, out)
    assert proc.returncode == 0, proc.stderr
    cli = pd.read_parquet(out)
    assert cli["series"].tolist() == ["load"] and cli["period"].tolist() == ["2023-01-03"]
    assert cli["forecast"].tolist() == [record["forecast"]]


@pytest.mark.parametrize("date", ["31/02/2023", "2023-01-05", "soon"])
def test_daily_bad_date_is_422_naming_the_column(daily_server, date):
    row = {"date": date, "load": 1100.0, "temp": 3.0}
    status, body = request(daily_server.url + "/predict", "POST", {"rows": [row]})
    assert status == 422, body
    (detail,) = [d for d in body["details"] if d["rule"] == "time_readable"]
    assert detail["field"] == "date" and detail["value"] == [date]
    assert "day" in detail["message"] and "%d/%m/%Y" in detail["message"]


def test_daily_unknown_series_is_404(daily_server):
    row = {"series": "other", "date": "01/01/2023", "load": 1100.0, "temp": 3.0}
    status, body = request(daily_server.url + "/predict", "POST", {"rows": [row]})
    assert status == 404 and body["details"][0]["field"] == "series"
    status, body = request(daily_server.url + "/forecasts/series")
    assert status == 404 and "series" in body["error"]


def test_quarterly_panel_over_http(quarterly_server, quarterly, quarterly_bundle):
    url = quarterly_server.url
    status, meta = request(url + "/v2/models/panelcast")
    assert status == 200 and meta["segment"] == "region" and meta["single_series"] is False
    assert meta["time"]["frequency"] == "Q" and meta["time"]["columns"] == ["year", "quarter"]
    assert (meta["target_label"], meta["unit"], meta["last_period"]) == (
        "Regional sales",
        "units",
        "2019-Q4",
    )
    assert request(url + "/v2/health/ready")[1]["segment"] == "region"
    status, body = request(url + "/forecasts/North")
    assert status == 200 and body["period"] == "2020-Q1"
    rows = [
        {"region": "North", "year": 2020, "quarter": 1, "sales": 2900.0, "price": 140.0},
        {"region": "West", "year": 2019, "quarter": 4, "sales": None, "price": 141.5},
        {"region": "West", "year": 2020, "quarter": 2, "sales": 5100.0, "price": None},
    ]
    status, online = request(url + "/predict", "POST", {"rows": rows, "segments": ["East"]})
    assert status == 200, online
    expected = quarterly.forecast(records_frame(rows), ["East"])
    got = [(r["region"], r["period"], r["forecast"]) for r in online["forecasts"]]
    assert got == list(
        zip(
            expected["region"],
            expected["period"],
            [None if math.isnan(v) else v for v in expected["forecast"]],
            strict=True,
        )
    )
    assert [r["period"] for r in online["forecasts"]] == ["2020-Q1", "2020-Q2", "2020-Q3"]
    bad = dict(rows[0], quarter=5)
    status, body = request(url + "/predict", "POST", {"rows": [bad]})
    assert status == 422
    fields = {(d["field"], d["rule"]) for d in body["details"]}
    assert {("quarter", "max"), ("year+quarter", "time_readable")} <= fields
    status, body = request(url + "/predict", "POST", {"rows": [dict(rows[0], region="Mars")]})
    assert status == 404
