"""Time in any frequency: the contract reads each row's period from the problem.time
columns (a date column, with or without a format, or year + period), in the params'
calendar; a time that is missing or not readable is an error naming the column(s) and the
values, never skipped; periods of the contract are written in that calendar."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from panelcast.core.config import TimeSpec
from panelcast.core.errors import ContractError
from panelcast.core.io import dumps_json
from panelcast.data.contract import (
    TIME_READABLE,
    check,
    check_completeness,
    format_failures,
    load_contract,
    read_time,
    report,
)

from .conftest import TIME, only, write_contract

DAILY = TimeSpec(frequency="D", column="day", format="%Y%m%d")
WEEKLY = TimeSpec(frequency="W", column="week")
QUARTERLY = TimeSpec(frequency="Q", year_column="year", period_column="quarter")
YEARLY = TimeSpec(frequency="Y", year_column="year")


def rules(failures, rule=None):
    return [f for f in failures if rule is None or f.rule == rule]


# --------------------------------------------------------------------------- daily, with a format

DAILY_CONTRACT = """
key: [shop, day]
min_rows: 1
extra_columns: error
time: {not_before: 2001-01-02, not_after: 2001-03-31}
completeness: {last_period_not_before: 2001-01-20, rows_per_period: {min: 2}, gaps: warn}
columns:
  shop: {type: string, allowed: [A, B]}
  day: {type: integer}
  sales: {type: number, nullable: true}
"""


def daily_table(days: int = 20) -> pd.DataFrame:
    stamps = pd.date_range("2001-01-02", periods=days, freq="D")
    numbers = stamps.strftime("%Y%m%d").astype(int).to_numpy()
    return pd.DataFrame(
        {
            "shop": np.repeat(["A", "B"], days),
            "day": np.tile(numbers, 2),
            "sales": np.arange(2 * days, dtype=float),
        }
    )


@pytest.fixture
def daily(tmp_path):
    return write_contract(tmp_path, DAILY_CONTRACT, calendar=DAILY.calendar)


def test_daily_periods_are_read_in_the_params_calendar(daily):
    assert (daily.time.not_before, daily.time.not_after) == ("2001-01-02", "2001-03-31")
    assert daily.completeness.last_period_not_before == "2001-01-20"


def test_daily_table_with_a_format_passes(daily):
    table = daily_table()
    assert check(table, daily, DAILY) == []
    assert check_completeness(table, daily, "shop", DAILY) == []


def test_daily_span_rules_name_days(daily):
    table = daily_table()
    table.loc[0, "day"] = 20010101
    table.loc[1, "day"] = 20010415
    out = check(table, daily, DAILY)
    assert only(rules(out, "not_before")).examples == ["2001-01-01"]
    after = only(rules(out, "not_after"))
    assert after.column == "day" and after.examples == ["2001-04-15"]
    assert "dated after 2001-03-31" in after.message


def test_unreadable_dates_are_an_error_naming_the_column_and_values(daily):
    table = daily_table()
    table["day"] = table["day"].astype(float)
    table.loc[3, "day"] = 20010230  # February 30th
    table.loc[5, "day"] = np.nan
    f = only(rules(check(table, daily, DAILY), TIME_READABLE))
    assert (f.column, f.severity, f.count) == ("day", "error", 2)
    assert f.examples == [20010230.0, None]
    assert "format '%Y%m%d'" in f.message and "2 row(s)" in f.message
    text = format_failures([f], "snap.parquet")
    assert "column 'day', rule 'time_readable'" in text and "20010230" in text


def test_a_number_is_not_a_date_without_a_format(daily):
    table = daily_table()
    no_format = TimeSpec(frequency="D", column="day")
    f = only(rules(check(table, daily, no_format), TIME_READABLE))
    assert f.count == len(table) and "problem.time.format" in f.message


def test_daily_gaps_are_named_in_days(daily):
    table = daily_table()
    table = table[~table["day"].isin([20010105, 20010106])].reset_index(drop=True)
    out = check_completeness(table, daily, "shop", DAILY)
    gap = only(rules(out, "gaps"))
    assert gap.examples[0] == "A: 2001-01-05..2001-01-06 (2 days)"
    assert only(rules(out, "rows_per_period")).examples == [
        "2001-01-05: 0 rows",
        "2001-01-06: 0 rows",
    ]


def test_a_contract_read_in_another_frequency_is_named(tmp_path):
    monthly = write_contract(tmp_path, DAILY_CONTRACT.replace("2001-01-02", "2001-01"),
                             lambda t: t.replace("not_after: 2001-03-31, ", "")
                             .replace("last_period_not_before: 2001-01-20, ", ""))  # fmt: skip
    with pytest.raises(ContractError, match="'time.not_before' '2001-01' is not a day"):
        check(daily_table(), monthly, DAILY)


def test_a_period_of_the_wrong_form_is_refused_on_load(tmp_path):
    with pytest.raises(ContractError) as info:
        write_contract(
            tmp_path, DAILY_CONTRACT.replace("2001-01-02", "2001-01"), calendar=DAILY.calendar
        )
    assert "'time.not_before' must be a day 'YYYY-MM-DD'" in str(info.value), str(info.value)


# --------------------------------------------------------------------------- weekly dates

WEEKLY_CONTRACT = """
min_rows: 1
extra_columns: error
time: {not_before: 2001-01-03, no_future: true}
completeness: {expected_segments: [A, B], gaps: warn}
columns:
  store: {type: string}
  week: {type: string}
  units: {type: number}
"""


def weekly_table() -> pd.DataFrame:
    # any day of a week stands for it: Wednesdays here
    stamps = pd.date_range("2001-01-03", periods=10, freq="7D")
    return pd.DataFrame(
        {
            "store": np.repeat(["A", "B"], 10),
            "week": np.tile(stamps.strftime("%Y-%m-%d"), 2),
            "units": np.arange(20, dtype=float),
        }
    )


def test_weekly_text_dates(tmp_path):
    contract = write_contract(tmp_path, WEEKLY_CONTRACT, calendar=WEEKLY.calendar)
    assert contract.time.not_before == "2001-01-01"  # the week's Monday
    assert contract.key == []  # a contract may have no key
    table = weekly_table()
    assert check(table, contract, WEEKLY) == []
    table = table.drop(index=[3, 4]).reset_index(drop=True)
    gap = only(check_completeness(table, contract, "store", WEEKLY))
    assert gap.examples == ["A: 2001-01-22..2001-01-29 (2 weeks)"]


def test_weekly_unreadable_text_and_no_future(tmp_path):
    contract = write_contract(tmp_path, WEEKLY_CONTRACT, calendar=WEEKLY.calendar)
    table = weekly_table()
    table.loc[2, "week"] = "someday"
    out = check(table, contract, WEEKLY, today=dt.date(2001, 2, 1))
    assert only(rules(out, TIME_READABLE)).examples == ["someday"]
    future = only(rules(out, "no_future"))
    assert future.examples[0] == "2001-02-05" and "after 2001-01-29" in future.message


def test_mixed_utc_offsets_are_an_error_not_a_crash(tmp_path):
    contract = write_contract(tmp_path, WEEKLY_CONTRACT, calendar=WEEKLY.calendar)
    table = weekly_table()
    table["week"] = table["week"] + "T00:00:00+05:00"
    table.loc[1, "week"] = "2001-01-10T00:00:00+01:00"
    out = rules(check(table, contract, WEEKLY), TIME_READABLE)
    assert out and out[0].column == "week" and "\n" not in out[0].message


# --------------------------------------------------------------------------- year + quarter

QUARTERLY_CONTRACT = """
key: [region, year, quarter]
min_rows: 1
extra_columns: error
time: {not_after: 2004-Q4, agree: {when: decimal_year}}
completeness: {last_period_not_before: 2004-Q2, gaps: error}
columns:
  region: {type: string, allow_constant: true}
  year: {type: integer}
  quarter: {type: integer, min: 1, max: 4}
  gdp: {type: number}
  when: {type: number}
"""


def quarterly_table() -> pd.DataFrame:
    k = np.arange(16)
    year, quarter = 2001 + k // 4, k % 4 + 1
    return pd.DataFrame(
        {
            "region": "North",
            "year": year,
            "quarter": quarter,
            "gdp": 100.0 + k,
            "when": year + (quarter - 1) / 4,
        }
    )


@pytest.fixture
def quarterly(tmp_path):
    return write_contract(tmp_path, QUARTERLY_CONTRACT, calendar=QUARTERLY.calendar)


def test_quarterly_table_passes(quarterly):
    assert quarterly.time.not_after == "2004-Q4"
    table = quarterly_table()
    assert check(table, quarterly, QUARTERLY) == []
    assert check_completeness(table, quarterly, "region", QUARTERLY) == []


def test_quarterly_decimal_year_divides_by_four(quarterly):
    table = quarterly_table()
    table.loc[5, "when"] += 0.25
    f = only(rules(check(table, quarterly, QUARTERLY), "agree"))
    assert f.examples == ["row 5: 2002.5 for 2002-Q2"]
    assert "when = year + (quarter - 1) / 4" in f.message


def test_quarter_5_is_unreadable(quarterly):
    table = quarterly_table()
    table.loc[2, "quarter"] = 5
    out = check(table, quarterly, QUARTERLY)
    f = only(rules(out, TIME_READABLE))
    assert (f.column, f.examples) == ("year+quarter", ["year=2001, quarter=5"])
    assert "quarters 1..4" in f.message
    assert only(rules(out, "max")).column == "quarter"
    assert not rules(out, "agree")  # an unreadable row is not also called a disagreement


def test_quarterly_gap_is_an_error_in_quarters(quarterly):
    table = quarterly_table().drop(index=[6]).reset_index(drop=True)
    gap = only(check_completeness(table, quarterly, "region", QUARTERLY))
    assert (gap.severity, gap.examples) == ("error", ["North: 2002-Q3 (1 quarter)"])


def test_last_period_in_quarters(quarterly):
    table = quarterly_table()
    table = table[table["year"] < 2004]
    f = only(check_completeness(table, quarterly, "region", QUARTERLY))
    assert f.rule == "last_period" and f.examples == ["2003-Q4"]


def test_decimal_year_needs_year_and_period_columns(tmp_path):
    text = QUARTERLY_CONTRACT.replace("not_after: 2004-Q4", "not_after: 2004-12").replace(
        "last_period_not_before: 2004-Q2", "last_period_not_before: 2004-06"
    )
    contract = write_contract(tmp_path, text)  # monthly
    table = quarterly_table().assign(day=pd.Timestamp("2001-01-01"))
    with pytest.raises(ContractError, match="'time.agree.when' is 'decimal_year'"):
        check(table, contract, TimeSpec(frequency="M", column="day"))


def test_decimal_year_is_refused_for_daily_data_on_load(tmp_path):
    text = QUARTERLY_CONTRACT.replace("not_after: 2004-Q4", "not_after: 2004-12-31").replace(
        "last_period_not_before: 2004-Q2", "last_period_not_before: 2004-06-30"
    )
    with pytest.raises(ContractError) as info:
        write_contract(tmp_path, text, calendar=DAILY.calendar)
    assert "'time.agree.when' kind 'decimal_year' needs monthly or quarterly" in str(info.value)


# --------------------------------------------------------------------------- yearly

YEARLY_CONTRACT = """
key: [country, year]
min_rows: 1
extra_columns: error
time: {not_before: 1990, no_future: true}
completeness: {last_period_not_before: 2010}
columns:
  country: {type: string, allow_constant: true}
  year: {type: integer}
  population: {type: number}
"""


def yearly_table() -> pd.DataFrame:
    years = np.arange(1990, 2011)
    return pd.DataFrame(
        {"country": "Chile", "year": years, "population": 13e6 + 1e5 * (years - 1990)}
    )


def test_yearly_table(tmp_path):
    contract = write_contract(tmp_path, YEARLY_CONTRACT, calendar=YEARLY.calendar)
    assert (contract.time.not_before, contract.completeness.last_period_not_before) == (
        "1990",
        "2010",
    )
    table = yearly_table()
    assert check(table, contract, YEARLY, today=dt.date(2020, 1, 1)) == []
    assert check_completeness(table, contract, "country", YEARLY) == []
    out = check(table, contract, YEARLY, today=dt.date(2005, 6, 1))
    assert only(rules(out, "no_future")).examples[:2] == ["2006", "2007"]
    gap = only(check_completeness(table.drop(index=[3]), contract, "country", YEARLY))
    assert gap.examples == ["Chile: 1993 (1 year)"]


def test_year_as_text_is_not_skipped(tmp_path):
    contract = write_contract(tmp_path, YEARLY_CONTRACT, calendar=YEARLY.calendar)
    table = yearly_table()
    table["year"] = table["year"].astype(str)
    table.loc[4, "year"] = "nineteen"
    out = check(table, contract, YEARLY, today=dt.date(2020, 1, 1))
    assert only(rules(out, "type")).column == "year"
    f = only(rules(out, TIME_READABLE))
    assert f.column == "year" and f.examples == ["year='nineteen'"]
    dumps_json(report(out, "snap", "contract", len(table)))


# --------------------------------------------------------------------------- monthly, as before


def test_month_13_is_unreadable_as_well_as_above_the_maximum(tmp_path, panel):
    from ..conftest import ROOT

    texas = load_contract(ROOT / "contract.yaml")
    panel["city"] = "Austin"
    panel.loc[4, "month"] = 13
    out = check(panel, texas, TIME)
    f = only(rules(out, TIME_READABLE))
    assert (f.column, f.severity, f.count) == ("year+month", "error", 1)
    assert f.examples == ["year=2000, month=13"]
    assert "year+month (monthly)" in f.message and "months 1..12" in f.message
    assert [g.column for g in rules(out, "max")] == ["month"]


def test_an_absent_time_column_is_named(tmp_path):
    contract = write_contract(tmp_path, YEARLY_CONTRACT, calendar=YEARLY.calendar)
    table = yearly_table()
    elsewhere = TimeSpec(frequency="Y", year_column="yr")
    out = check(table, contract, elsewhere)
    f = only([f for f in out if f.column == "yr"])
    assert f.rule == "required" and "problem.time" in f.message
    ok, _, failures = read_time(table, elsewhere)
    assert not ok.any() and only(failures).rule == "required"


def test_no_time_rules_without_a_time_spec(tmp_path):
    contract = write_contract(tmp_path, YEARLY_CONTRACT, calendar=YEARLY.calendar)
    table = yearly_table().assign(year=99999)
    assert [f.rule for f in check(table, contract)] == ["not_constant", "unique_key"]
