"""Column rules on small frames: finite numbers, the magnitude guard, plausible bounds,
booleans and other non-numbers refused by the type rule (naming the actual type), the
datetime type, and redundant time columns that must agree with year and month."""

from __future__ import annotations

import datetime as dt
import decimal

import numpy as np
import pandas as pd
import pytest

from panelcast.core.errors import ContractError
from panelcast.core.io import dumps_json
from panelcast.data.contract import check, format_failures, load_contract, report
from panelcast.data.sources import parse_table, read_source

from ..conftest import ROOT
from .conftest import TIME, only, write_contract

SMALL = """
key: [city, year, month]
min_rows: 1
extra_columns: error
time: {not_before: 2000-01, no_future: true, agree: {date: decimal_year}}
columns:
  city: {type: string, allowed: [A, B, C]}
  year: {type: integer, min: 1990, max: 2100}
  month: {type: integer, min: 1, max: 12}
  sales: {type: number, nullable: true, min: 0, max: 100000}
  volume: {type: number, nullable: true, min: 0}
  median: {type: number, nullable: true, min: 0}
  listings: {type: number, nullable: true}
  inventory: {type: number, nullable: true, max: 120}
  date: {type: number}
"""


def contract_of(tmp_path, text: str = SMALL, edit=lambda t: t):
    return write_contract(tmp_path, text, edit)


def found(frame, contract, rule=None, column=None):
    out = check(frame, contract, TIME)
    return [
        f
        for f in out
        if (rule is None or f.rule == rule) and (column is None or f.column == column)
    ]


@pytest.fixture
def small(tmp_path):
    return contract_of(tmp_path)


def test_small_panel_passes(small, panel):
    assert not [f for f in check(panel, small, TIME) if f.severity == "error"]


# --------------------------------------------------------------------------- finite


def test_infinite_values_break_the_finite_rule_and_nothing_else(small, panel):
    panel.loc[3, "sales"] = np.inf
    panel.loc[4, "volume"] = -np.inf
    failures = check(panel, small, TIME)
    sales = only([f for f in failures if f.column == "sales"])
    assert (sales.rule, sales.severity, sales.count, sales.examples) == (
        "finite",
        "error",
        1,
        ["inf"],
    )
    volume = only([f for f in failures if f.column == "volume"])
    assert (volume.rule, volume.examples) == ("finite", ["-inf"])  # not also 'min'
    text = format_failures(failures, "snap.parquet")
    assert "column 'sales', rule 'finite', 1 value(s); e.g. ['inf']" in text
    dumps_json(report(failures, "snap.parquet", "c", len(panel)))  # JSON refuses inf: must pass


def test_infinite_year_is_not_called_fractional(small, panel):
    panel["year"] = panel["year"].astype(float)
    panel.loc[2, "year"] = np.inf
    assert [f.rule for f in found(panel, small, column="year")] == ["finite"]


@pytest.mark.parametrize(
    "setting,severity",
    [(", warn: [finite]", "warn"), (", allow_infinite: true", None)],
)
def test_finite_can_be_downgraded_or_switched_off(tmp_path, panel, setting, severity):
    contract = contract_of(
        tmp_path, edit=lambda t: t.replace("listings: {type: number, nullable: true", "listings: "
                                           "{type: number, nullable: true" + setting)
    )  # fmt: skip
    panel.loc[0, "listings"] = np.inf
    failures = found(panel, contract, column="listings")
    assert [f.severity for f in failures] == ([severity] if severity else [])


def test_allow_infinite_is_refused_on_a_string_column(tmp_path):
    with pytest.raises(ContractError, match="'columns.city.allow_infinite' applies to integer"):
        contract_of(tmp_path, edit=lambda t: t.replace("type: string,", "type: string, "
                                                       "allow_infinite: true,"))  # fmt: skip


# --------------------------------------------------------------------------- magnitudes


def test_magnitude_guard_applies_by_default_and_names_itself(small, panel):
    panel.loc[5, "listings"] = 1e308  # no max in the contract: only the guard stops it
    f = only(found(panel, small, column="listings"))
    assert (f.rule, f.examples) == ("max_abs", [1e308])
    assert "|x| <= 1e+15" in f.message and "max_abs" in f.message
    panel.loc[5, "listings"] = -1e16
    assert only(found(panel, small, column="listings")).rule == "max_abs"
    panel.loc[5, "listings"] = 9e14  # within the guard
    assert found(panel, small, column="listings") == []


def test_min_and_max_apply_to_huge_magnitudes(small, panel):
    panel.loc[5, "sales"] = 1e308
    panel.loc[6, "median"] = -1e308
    assert {f.rule for f in found(panel, small, column="sales")} == {"max", "max_abs"}
    assert {f.rule for f in found(panel, small, column="median")} == {"min", "max_abs"}


def test_magnitude_guard_is_configurable(tmp_path, panel):
    edit = lambda t: t.replace("listings: {type: number, nullable: true", "listings: {type: "  # noqa: E731
                               "number, nullable: true, max_abs: 5000")  # fmt: skip
    panel.loc[5, "listings"] = 6000.0
    assert only(found(panel, contract_of(tmp_path, edit=edit), column="listings")).rule == (
        "max_abs"
    )
    off = lambda t: t.replace("listings: {type: number, nullable: true", "listings: {type: "  # noqa: E731
                              "number, nullable: true, max_abs: null")  # fmt: skip
    panel.loc[5, "listings"] = 1e300
    assert found(panel, contract_of(tmp_path, edit=off), column="listings") == []


def test_a_yaml_number_written_as_text_is_explained(tmp_path):
    with pytest.raises(ContractError) as info:
        contract_of(tmp_path, edit=lambda t: t.replace("max: 100000}", "max: 1e5}"))
    text = str(info.value)
    assert "'columns.sales.max' must be a number (YAML reads 1e5 as text" in text, text
    assert "1.0e+9" in text and "got '1e5'" in text


TEXAS_NUMBERS = ("sales", "volume", "median", "listings", "inventory")


@pytest.fixture(scope="module")
def real():
    return parse_table(read_source("package://plotnine/data/txhousing.csv"))


@pytest.fixture(scope="module")
def texas():
    return load_contract(ROOT / "contract.yaml")


@pytest.mark.parametrize("column", TEXAS_NUMBERS)
def test_texas_columns_have_plausible_upper_bounds(real, texas, column):
    rule = texas.columns[column]
    observed = real[column].max()
    assert rule.max is not None and observed < rule.max <= 100 * observed
    if column != "inventory":  # months of supply: 120 (10 years) is the plausible ceiling
        assert rule.max >= 10 * observed
    bad = real.copy()
    bad.loc[7, column] = 1e308
    errors = {
        f.rule for f in check(bad, texas, TIME) if f.column == column and f.severity == "error"
    }
    assert errors == {"max", "max_abs"}


# --------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    "make",
    [
        lambda s: s > 500,
        lambda s: (s > 500).astype("boolean"),
        lambda s: (s > 500).astype("bool[pyarrow]"),
        lambda s: (s > 500).astype(object),
    ],
    ids=["numpy", "pandas_boolean", "pyarrow", "object"],
)
@pytest.mark.parametrize("column", ["sales", "year"])
def test_booleans_are_not_numbers(small, panel, make, column):
    panel[column] = make(panel[column])
    f = only(found(panel, small, rule="type", column=column))
    assert f.severity == "error" and f.count == len(panel)
    assert "booleans" in f.message and "not numbers" in f.message
    assert set(f.examples) <= {True, False}


def parquet_round_trip(frame: pd.DataFrame, tmp_path) -> pd.DataFrame:
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    return pd.read_parquet(path)


def test_parquet_datetimes_decimals_and_bytes_are_named_by_type(small, panel, tmp_path):
    panel["date"] = pd.to_datetime(
        {"year": panel["year"], "month": panel["month"], "day": 1}
    ).dt.tz_localize("UTC")
    panel["median"] = [decimal.Decimal(f"{v:.2f}") for v in panel["median"]]
    panel["city"] = panel["city"].map(str.encode)
    panel["inventory"] = pd.to_datetime(panel["date"]).dt.tz_localize(None)
    table = parquet_round_trip(panel, tmp_path)
    failures = check(table, small, TIME)
    by = {f.column: f for f in failures if f.rule == "type"}
    assert set(by) == {"date", "median", "city", "inventory"}
    assert "datetime64[" in by["date"].message and "UTC" in by["date"].message
    assert "datetime64[" in by["inventory"].message
    assert "Decimal" in by["median"].message
    assert "bytes" in by["city"].message and by["city"].examples[0] == "b'A'"
    assert by["date"].examples[0] == "2000-01-01 00:00:00+00:00"
    assert by["median"].examples[0] == "100000.00"
    text = dumps_json(report(failures, "snap.parquet", "c", len(table)))  # JSON-safe
    assert "datetime64" in text


def test_numbers_in_a_string_column_name_the_dtype(small, panel):
    panel["city"] = 7
    f = only(found(panel, small, rule="type", column="city"))
    assert "must hold strings; found dtype int64" in f.message and f.examples == [7]


def test_mixed_object_string_column_reports_the_non_text_cells(small, panel):
    panel["city"] = panel["city"].astype(object)
    panel.loc[4, "city"] = 12
    f = only(found(panel, small, rule="type", column="city"))
    assert f.count == 1 and f.examples == [12]


def test_object_column_of_python_numbers_is_numeric(small, panel):
    panel["listings"] = panel["listings"].astype(object)
    assert found(panel, small, column="listings") == []


DATETIME = SMALL.replace("  date: {type: number}", "  date: {type: datetime}").replace(
    "agree: {date: decimal_year}", "agree: {date: date}"
)


def month_starts(panel: pd.DataFrame) -> pd.Series:
    return pd.to_datetime({"year": panel["year"], "month": panel["month"], "day": 1})


@pytest.mark.parametrize(
    "convert",
    [
        lambda d: d,
        lambda d: d.dt.tz_localize("America/Chicago"),
        lambda d: d.dt.date.astype(object),
    ],
    ids=["naive", "tz_aware", "date_objects"],
)
def test_datetime_type_accepts_datetimes(tmp_path, panel, convert):
    contract = contract_of(tmp_path, DATETIME)
    panel["date"] = convert(month_starts(panel))
    assert found(panel, contract, column="date") == []


def test_datetime_type_refuses_numbers(tmp_path, panel):
    f = only(found(panel, contract_of(tmp_path, DATETIME), column="date"))
    assert f.rule == "type" and "must hold datetimes; found dtype float64" in f.message


# --------------------------------------------------------------------------- agreement


def test_real_dates_agree_with_year_and_month(real, texas):
    assert not [f for f in check(real, texas, TIME) if f.rule == "agree"]
    assert texas.time.agree == {"date": "decimal_year"}


def test_a_date_off_by_one_month_disagrees_naming_row_and_values(small, panel):
    panel.loc[17, "date"] = panel.loc[17, "date"] + 1 / 12
    panel.loc[30, "date"] = 1999.0
    f = only(found(panel, small, rule="agree"))
    assert (f.column, f.count, f.severity) == ("date", 2, "error")
    year, month = panel.loc[17, ["year", "month"]]
    assert f.examples[0] == f"row 17: {float(panel.loc[17, 'date'])!r} for {year}-{month:02d}"
    assert f.examples[1].startswith("row 30: 1999.0 for ")
    assert "decimal_year" in f.message and "year + (month - 1) / 12" in f.message


def test_decimal_year_tolerates_rounding_and_float32(small, panel):
    panel["date"] = panel["date"].round(6)
    assert found(panel, small, rule="agree") == []
    panel["date"] = panel["date"].astype("float32")
    assert found(panel, small, rule="agree") == []


def test_missing_date_and_bad_month_are_left_to_their_own_rules(small, panel):
    panel.loc[3, "date"] = np.nan
    panel.loc[4, "month"] = 13
    rules = {(f.column, f.rule) for f in check(panel, small, TIME)}
    assert ("date", "not_null") in rules and ("month", "max") in rules
    assert not [r for r in rules if r[1] == "agree"]


@pytest.mark.parametrize(
    "values",
    [
        lambda d: d.dt.strftime("%Y-%m-%d"),
        lambda d: d.dt.strftime("%Y-%m-%dT%H:%M:%S+05:00"),
        lambda d: d,
        lambda d: d.dt.tz_localize("UTC"),
    ],
    ids=["iso_date_text", "iso_datetime_offset", "datetime", "datetime_utc"],
)
def test_date_kind_checks_year_and_month(tmp_path, panel, values):
    dates = values(month_starts(panel))
    text = DATETIME
    if not pd.api.types.is_datetime64_any_dtype(dates):
        text = DATETIME.replace("  date: {type: datetime}", "  date: {type: string}")
    contract = contract_of(tmp_path, text)
    panel["date"] = dates
    assert found(panel, contract, rule="agree") == []
    wrong = month_starts(panel.iloc[[9, 20]]) + pd.DateOffset(months=1)
    panel.loc[[9, 20], "date"] = values(wrong).to_numpy()
    f = only(found(panel, contract, rule="agree"))
    assert f.count == 2 and f.examples[0].startswith("row 9: ")
    assert f.examples[1].startswith("row 20: ") and "for 2001-09" in f.examples[1]


def test_unreadable_iso_text_disagrees(tmp_path, panel):
    text = DATETIME.replace("  date: {type: datetime}", "  date: {type: string}")
    contract = contract_of(tmp_path, text)
    panel["date"] = month_starts(panel).dt.strftime("%Y-%m-%d")
    panel.loc[2, "date"] = "2000-13-01"
    panel.loc[5, "date"] = "March 2000"
    f = only(found(panel, contract, rule="agree"))
    assert f.count == 2 and "'2000-13-01'" in f.examples[0]


@pytest.mark.parametrize(
    "edit,fragment",
    [
        (
            lambda t: t.replace("agree: {date: decimal_year}", "agree: {city: decimal_year}"),
            "'time.agree.city' kind 'decimal_year' needs a column of type integer or number",
        ),
        (
            lambda t: t.replace("agree: {date: decimal_year}", "agree: {date: date}"),
            "'time.agree.date' kind 'date' needs a column of type string or datetime",
        ),
        (
            lambda t: t.replace("agree: {date: decimal_year}", "agree: {dates: decimal_year}"),
            "'time.agree.dates' must name a column declared under columns",
        ),
        (
            lambda t: t.replace("agree: {date: decimal_year}", "agree: {date: julian}"),
            "'time.agree.date' must be one of 'decimal_year' or 'date', got 'julian'",
        ),
    ],
)
def test_invalid_agree_settings_are_named(tmp_path, edit, fragment):
    with pytest.raises(ContractError) as info:
        contract_of(tmp_path, edit=edit)
    assert fragment in str(info.value), str(info.value)


def test_no_future_still_uses_today(small, panel):
    panel.loc[0, "year"] = 2099
    panel.loc[0, "date"] = 2099.0
    hits = [
        f for f in check(panel, small, TIME, today=dt.date(2026, 1, 1)) if f.rule == "no_future"
    ]
    assert only(hits).examples == ["2099-01"]
