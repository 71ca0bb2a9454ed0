"""prepare: from the collected table to the panel (filter, wide to long, single series,
aggregate, missing periods, sorted), with every count reported and every problem one line
naming the params key; and the validate stage around it (contract on the raw table,
completeness on the panel)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from panelcast.core.config import PrepareSpec, ProblemSpec, TimeSpec
from panelcast.core.errors import DataError
from panelcast.core.io import dumps_json
from panelcast.data.contract import load_contract
from panelcast.data.prepare import PrepareError, prepare, prepare_panel
from panelcast.data.timeaxis import time_index
from panelcast.pipeline.validate import validate

from ..conftest import make_panel

MONTHLY = TimeSpec(frequency="M", year_column="year", period_column="month")


def problem(
    time: TimeSpec = MONTHLY, segment: str | None = "city", target: str = "sales"
) -> ProblemSpec:
    return ProblemSpec(
        question="q",
        segment=segment,
        time=time,
        target=target,
        horizon=1,
        metric="mae",
        success="s",
    )


def spec(**kw) -> PrepareSpec:
    return PrepareSpec.model_validate(kw)


def refused(frame, prob, prep) -> str:
    with pytest.raises(PrepareError) as info:
        prepare_panel(frame, prob, prep)
    text = str(info.value)
    assert "\n" not in text and isinstance(info.value, DataError)
    return text


# --------------------------------------------------------------------------- nothing to do


def test_no_step_returns_the_table_sorted_by_segment_and_time():
    table = make_panel()
    shuffled = table.sample(frac=1.0, random_state=0).reset_index(drop=True)
    panel, report = prepare_panel(shuffled, problem(), PrepareSpec())
    expected = shuffled.sort_values(["city", "year", "month"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(panel, expected)
    assert "period" not in panel.columns
    assert report == {
        "rows_in": 180,
        "steps": [],
        "rows_filtered_out": 0,
        "rows_after_wide": 180,
        "rows_aggregated": 0,
        "periods_inserted": 0,
        "inserted_by_segment": {},
        "segments": 3,
        "rows_out": 180,
    }
    dumps_json(report)


def test_the_input_is_not_changed():
    table = make_panel()
    before = table.copy()
    prepare_panel(table.iloc[::-1], problem(), spec(filter=[{"column": "city", "in": ["A"]}]))
    pd.testing.assert_frame_equal(table, before)


# --------------------------------------------------------------------------- filter


def test_filter_rules_are_anded():
    table = make_panel()
    rules = [
        {"column": "city", "in": ["A", "B"]},
        {"column": "city", "not_in": ["B"]},
        {"column": "year", "min": 2001, "max": 2003},
    ]
    panel, report = prepare_panel(table, problem(), spec(filter=rules))
    assert set(panel["city"]) == {"A"} and sorted(set(panel["year"])) == [2001, 2002, 2003]
    assert (report["rows_filtered_out"], report["rows_out"]) == (144, 36)
    assert report["steps"] == ["filter"]
    panel, _ = prepare_panel(table, problem(), spec(filter=[{"column": "city", "equals": "C"}]))
    assert set(panel["city"]) == {"C"} and len(panel) == 60


def test_a_filter_that_leaves_holes_gets_them_filled():
    table = make_panel(segments=("A",))
    keep_june = spec(filter=[{"column": "month", "equals": 6}])
    panel, report = prepare_panel(table, problem(), keep_june)
    assert report["rows_filtered_out"] == 55 and report["periods_inserted"] == 44
    assert panel["sales"].notna().sum() == 5


def test_filter_errors_name_the_key():
    table = make_panel()
    text = refused(table, problem(), spec(filter=[{"column": "town", "equals": "A"}]))
    assert text.startswith("params key 'prepare.filter[0].column': column 'town'")
    assert "'city'" in text
    text = refused(table, problem(), spec(filter=[{"column": "city", "min": 3}]))
    assert text.startswith("params key 'prepare.filter[0].min': needs a column of numbers")
    text = refused(table, problem(), spec(filter=[{"column": "year", "min": 2100}]))
    assert text.startswith("params key 'prepare.filter': no row is left of 180")


# --------------------------------------------------------------------------- wide to long


def wide_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "year": np.repeat([2001, 2002], 12),
            "month": np.tile(np.arange(1, 13), 2),
            "sales_north": np.arange(24, dtype=float),
            "sales_south": 100 + np.arange(24, dtype=float),
            "note": "x",
        }
    )


@pytest.mark.parametrize(
    "wide",
    [
        {"columns": ["sales_north", "sales_south"], "segment": "region", "value": "sales"},
        {"pattern": "^sales_", "segment": "region", "value": "sales"},
    ],
    ids=["list", "pattern"],
)
def test_wide_to_long(wide):
    panel, report = prepare_panel(wide_table(), problem(segment="region"), spec(wide=wide))
    assert list(panel.columns) == ["year", "month", "note", "region", "sales"]
    assert list(panel["region"].unique()) == ["sales_north", "sales_south"]
    north = panel[panel["region"] == "sales_north"]
    assert list(north["sales"]) == list(range(24)) and list(north["month"][:3]) == [1, 2, 3]
    assert (report["rows_in"], report["rows_after_wide"], report["rows_out"]) == (24, 48, 48)
    assert report["segments"] == 2 and report["steps"] == ["wide"]


def test_wide_errors_name_the_key_and_the_columns():
    wide = {"pattern": "^units_", "segment": "region", "value": "sales"}
    text = refused(wide_table(), problem(segment="region"), spec(wide=wide))
    assert text.startswith("params key 'prepare.wide.pattern': '^units_' matches none")
    assert "'sales_north'" in text and "'note'" in text
    wide = {"columns": ["sales_east"], "segment": "region", "value": "sales"}
    text = refused(wide_table(), problem(segment="region"), spec(wide=wide))
    assert "'prepare.wide.columns'" in text and "'sales_east'" in text
    wide = {"pattern": "^sales_", "segment": "area", "value": "sales"}
    text = refused(wide_table(), problem(segment="region"), spec(wide=wide))
    assert text.startswith("params key 'prepare.wide.segment': must be the panel's segment")
    wide = {"pattern": "^(sales_|year)", "segment": "region", "value": "sales"}
    assert "time column(s) ['year']" in refused(
        wide_table(), problem(segment="region"), spec(wide=wide)
    )


# --------------------------------------------------------------------------- single series


def test_single_series_gets_a_segment_column_named_after_the_target():
    table = make_panel(segments=("A",)).drop(columns=["city"])
    panel, report = prepare_panel(table.iloc[::-1], problem(segment=None), PrepareSpec())
    assert panel.columns[0] == "series" and set(panel["series"]) == {"sales"}
    assert list(panel["month"][:3]) == [1, 2, 3] and report["segments"] == 1
    text = refused(table.assign(series=1), problem(segment=None), PrepareSpec())
    assert text.startswith("params key 'problem.segment': is absent")


# --------------------------------------------------------------------------- aggregate


def events() -> pd.DataFrame:
    """Daily rows (a date column) of two shops, aggregated to months."""
    return pd.DataFrame(
        {
            "shop": ["A", "A", "A", "B", "A", "B", "A"],
            "date": [
                "2001-01-03",
                "2001-01-20",
                "2001-01-31",
                "2001-01-05",
                "2001-02-14",
                "2001-03-01",
                "2001-03-09",
            ],
            "amount": [1.0, 2.0, np.nan, 10.0, 4.0, 20.0, np.nan],
            "price": [5.0, 7.0, 6.0, 1.0, 2.0, 3.0, 8.0],
            "kind": ["a", "b", "c", "d", "e", "f", None],
        }
    )


MONTH_OF_DATE = TimeSpec(frequency="M", column="date")


def test_aggregate_sum_mean_count_last_min_max():
    how = {
        "amount": "sum",
        "price": "mean",
        "kind": "count",
        "shop_last": "last",
    }
    frame = events().assign(shop_last=lambda d: d["amount"])
    prep = spec(aggregate=how | {"price_min": "min", "price_max": "max"})
    frame = frame.assign(price_min=frame["price"], price_max=frame["price"])
    panel, report = prepare_panel(frame, problem(MONTH_OF_DATE, "shop", "amount"), prep)
    assert list(panel.columns) == [
        "shop", "date", "amount", "price", "kind", "shop_last", "price_min", "price_max",
    ]  # fmt: skip
    assert list(panel["shop"]) == ["A", "A", "A", "B", "B", "B"]
    assert list(panel["date"].dt.strftime("%Y-%m-%d")) == [
        "2001-01-01", "2001-02-01", "2001-03-01", "2001-01-01", "2001-02-01", "2001-03-01",
    ]  # fmt: skip
    a_jan = panel.iloc[0]
    assert a_jan["amount"] == 3.0  # missing values skipped
    assert a_jan["price"] == 6.0 and a_jan["kind"] == 3
    assert np.isnan(a_jan["shop_last"])  # the last row's value, missing or not
    assert (a_jan["price_min"], a_jan["price_max"]) == (5.0, 7.0)
    a_mar = panel.iloc[2]
    assert np.isnan(a_mar["amount"]) and a_mar["kind"] == 0  # sum of nothing is missing
    b_feb = panel.iloc[4]  # inserted: values missing, count 0
    assert np.isnan(b_feb["amount"]) and b_feb["kind"] == 0 and panel["kind"].dtype == np.int64
    assert report["rows_aggregated"] == 7 - 5
    assert report["periods_inserted"] == 1 and report["inserted_by_segment"] == {"B": 1}
    assert report["steps"] == ["aggregate", "fill_missing"]
    ok, index = time_index(panel, MONTH_OF_DATE)
    assert ok.all() and list(np.diff(index[:3])) == [1, 1]


def test_aggregate_errors():
    prob = problem(MONTH_OF_DATE, "shop", "amount")
    text = refused(events(), prob, spec(aggregate={"amount": "sum", "colour": "last"}))
    assert text.startswith("params key 'prepare.aggregate': column(s) ['colour']")
    text = refused(events(), prob, spec(aggregate={"amount": "sum", "kind": "mean"}))
    assert text.startswith("params key 'prepare.aggregate.kind': 'mean' needs a column of")
    assert "use count or last" in text
    text = refused(events(), prob, spec(aggregate={"price": "mean"}))
    assert "must aggregate the target column problem.target 'amount'" in text


def test_duplicate_keys_without_aggregate_are_refused():
    text = refused(events(), problem(MONTH_OF_DATE, "shop", "amount"), PrepareSpec())
    assert text.startswith("params key 'prepare.aggregate': is not set, but 3 rows share 1 ")
    assert "e.g. A 2001-01" in text and "declare prepare.aggregate to combine them" in text
    panel = make_panel()
    text = refused(pd.concat([panel, panel.iloc[[4, 5]]]), problem(), PrepareSpec())
    assert "4 rows share 2 city+period key(s)" in text and "A 2000-05, A 2000-06" in text


# --------------------------------------------------------------------------- missing periods


def holes() -> pd.DataFrame:
    panel = make_panel()
    gone = (panel["city"] == "B") & (panel["year"] == 2001) & panel["month"].isin([3, 4])
    gone |= (panel["city"] == "C") & (panel["year"] == 2002) & (panel["month"] == 7)
    return panel[~gone].reset_index(drop=True)


def test_missing_periods_are_inserted_and_counted():
    prepared = prepare(holes(), problem(), PrepareSpec())
    panel, report = prepared.panel, prepared.report
    assert len(panel) == 180 and report["periods_inserted"] == 3
    assert report["inserted_by_segment"] == {"B": 2, "C": 1}
    rows = panel[prepared.inserted]
    assert list(zip(rows["city"], rows["year"], rows["month"], strict=True)) == [
        ("B", 2001, 3),
        ("B", 2001, 4),
        ("C", 2002, 7),
    ]
    assert rows["sales"].isna().all() and rows["date"].isna().all()
    assert panel["year"].dtype == np.int64 and panel["month"].dtype == np.int64
    assert not panel.duplicated(["city", "year", "month"]).any()


def test_fill_values_override_the_missing_values():
    panel, _ = prepare_panel(holes(), problem(), spec(fill_values={"sales": 0}))
    b = panel[(panel["city"] == "B") & (panel["year"] == 2001)]
    assert list(b["sales"][2:4]) == [0.0, 0.0] and b["volume"][2:4].isna().all()
    text = refused(holes(), problem(), spec(fill_values={"revenue": 0}))
    assert text.startswith("params key 'prepare.fill_values.revenue': column 'revenue'")


def test_gaps_without_fill_missing_name_segment_and_periods():
    text = refused(holes(), problem(), spec(fill_missing=False))
    assert text.startswith("params key 'prepare.fill_missing': is false, but 3 period(s)")
    assert "B: 2001-03..2001-04 (2 months), C: 2002-07 (1 month)" in text
    assert "2 segment(s) of column 'city'" in text


def test_a_weekly_date_table_gets_its_weeks_inserted():
    weeks = pd.date_range("2001-01-01", periods=6, freq="W-MON")
    table = pd.DataFrame({"week": weeks.strftime("%Y%m%d"), "units": np.arange(6.0)})
    time = TimeSpec(frequency="W", column="week", format="%Y%m%d")
    panel, report = prepare_panel(table.drop(index=[2, 3]), problem(time, None, "units"),
                                  PrepareSpec())  # fmt: skip
    assert report["periods_inserted"] == 2 and len(panel) == 6
    assert panel["week"].dtype == "datetime64[ns]"  # re-derived: the weeks' Mondays
    assert list(panel["week"]) == list(weeks)


def test_unreadable_time_names_the_column_and_values():
    table = make_panel()
    table.loc[3, "month"] = 13
    text = refused(table, problem(), PrepareSpec())
    assert text.startswith("params key 'problem.time': time year+month (monthly)")
    assert "year=2000, month=13" in text


# --------------------------------------------------------------------------- validate


WIDE_CONTRACT = """
min_rows: 1
extra_columns: error
time: {not_before: 2001-01, no_future: true}
completeness:
  expected_segments: [sales_north, sales_south]
  last_period_not_before: 2002-12
  rows_per_period: {min: 2, max: 2}
columns:
  year: {type: integer}
  month: {type: integer, min: 1, max: 12}
  sales_north: {type: number}
  sales_south: {type: number}
  note: {type: string, allow_constant: true}
"""


def test_validate_a_wide_table(tmp_path):
    path = tmp_path / "contract.yaml"
    path.write_text(WIDE_CONTRACT)
    contract = load_contract(path)
    prep = spec(wide={"pattern": "^sales_", "segment": "region", "value": "sales"})
    table, result, text = validate(
        wide_table(), contract, problem(segment="region"), prep, "snap", "contract.yaml"
    )
    assert result["passed"] is True and text == "" and len(table) == 48
    assert result["prepare"]["rows_after_wide"] == 48
    assert result["time"] == {
        "frequency": "M",
        "unit": "month",
        "columns": ["year", "month"],
        "first": "2001-01",
        "last": "2002-12",
        "periods": 24,
    }
    dumps_json(result)
    # completeness looks at the prepared panel: a segment lost is named
    short = wide_table().drop(columns=["sales_south"])
    path.write_text(WIDE_CONTRACT.replace("  sales_south: {type: number}\n", ""))
    table, result, text = validate(
        short, load_contract(path), problem(segment="region"), prep, "snap", "c"
    )
    assert table is None and "rule 'expected_segments'" in text and "'sales_south'" in text


def test_validate_turns_prepare_errors_into_one_line_failures(tmp_path):
    path = tmp_path / "contract.yaml"
    path.write_text(WIDE_CONTRACT)
    prep = spec(wide={"pattern": "^sales_", "segment": "region", "value": "sales"})
    frame = pd.concat([wide_table(), wide_table().iloc[[0]]], ignore_index=True)
    table, result, text = validate(
        frame, load_contract(path), problem(segment="region"), prep, "snap", "c"
    )
    assert table is None and result["passed"] is False and result["prepare"] is None
    failure = result["failures"][-1]
    assert failure["rule"] == "prepare.panel_key" and failure["severity"] == "error"
    assert "declare prepare.aggregate" in failure["message"]
    assert len(text.splitlines()) == len(result["failures"])
    assert result["time"]["first"] == "2001-01"  # read from the raw table


def test_missing_target_segment_and_empty_table_are_named():
    table = make_panel()
    text = refused(table.drop(columns=["sales"]), problem(), PrepareSpec())
    assert text.startswith("params key 'problem.target': column 'sales' is not in the")
    text = refused(table.drop(columns=["city"]), problem(), PrepareSpec())
    assert text.startswith("params key 'problem.segment': column 'city' is not in the table")
    table.loc[[2, 9], "city"] = None
    assert "2 row(s) have none (e.g. row(s) [2, 9])" in refused(table, problem(), PrepareSpec())
    assert "the table has no rows" in refused(table.iloc[:0], problem(), PrepareSpec())
