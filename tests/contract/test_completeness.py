"""Completeness of the panel: expected segments present, the last period late enough, rows
per period within bounds, and gaps inside a segment's history named as warnings."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from panelcast.core.config import load_params
from panelcast.core.errors import ContractError
from panelcast.core.io import dumps_json
from panelcast.data.contract import check_completeness, load_contract
from panelcast.data.sources import parse_table, read_source
from panelcast.pipeline.validate import validate

from ..conftest import ROOT, make_panel
from .conftest import TIME, only, write_contract

SMALL = """
key: [city, year, month]
min_rows: 1
extra_columns: error
completeness:
  expected_segments: allowed
  last_period_not_before: 2004-12
  rows_per_period: {min: 3, max: 3}
columns:
  city: {type: string, allowed: [A, B, C]}
  year: {type: integer}
  month: {type: integer}
  sales: {type: number, nullable: true}
  volume: {type: number, nullable: true}
  median: {type: number, nullable: true}
  listings: {type: number, nullable: true}
  inventory: {type: number, nullable: true}
  date: {type: number}
"""


def contract_of(tmp_path, text: str = SMALL, edit=lambda t: t):
    return write_contract(tmp_path, text, edit)


def failures(frame, contract, rule=None):
    out = check_completeness(frame, contract, "city", TIME)
    return [f for f in out if rule is None or f.rule == rule]


def drop(frame: pd.DataFrame, city: str, year: int, months=range(1, 13)) -> pd.DataFrame:
    gone = (frame["city"] == city) & (frame["year"] == year) & frame["month"].isin(months)
    return frame[~gone].reset_index(drop=True)


@pytest.fixture
def small(tmp_path):
    return contract_of(tmp_path)


def test_complete_panel_passes(small, panel):
    assert failures(panel, small) == []


# --------------------------------------------------------------------------- segments


def test_absent_segment_is_named(small, panel):
    f = only(failures(panel[panel["city"] != "B"], small, "expected_segments"))
    assert (f.column, f.severity, f.count, f.examples) == ("city", "error", 1, ["B"])
    assert "1 of 3 expected segment(s) of column 'city' are absent" in f.message


def test_explicit_segment_list(tmp_path, panel):
    text = SMALL.replace("expected_segments: allowed", "expected_segments: [A, C, D]")
    f = only(failures(panel, contract_of(tmp_path, text), "expected_segments"))
    assert f.examples == ["D"]


def test_allowed_without_an_allowed_list_is_a_contract_error(tmp_path, panel):
    text = SMALL.replace("city: {type: string, allowed: [A, B, C]}", "city: {type: string}")
    with pytest.raises(ContractError, match="'completeness.expected_segments' is 'allowed'"):
        failures(panel, contract_of(tmp_path, text))


@pytest.mark.parametrize("value", ["5", "[]", "all", "[A, 3]"])
def test_invalid_expected_segments_are_refused(tmp_path, value):
    text = SMALL.replace("expected_segments: allowed", f"expected_segments: {value}")
    with pytest.raises(ContractError, match="'completeness.expected_segments' must be 'allowed'"):
        contract_of(tmp_path, text)


@pytest.fixture(scope="module")
def raw_csv() -> bytes:
    return read_source("package://plotnine/data/txhousing.csv").data


@pytest.fixture(scope="module")
def texas():
    return load_contract(ROOT / "contract.yaml")


def cut_after_cities(data: bytes, kept: int) -> bytes:
    """The CSV cut at the line boundary after its first ``kept`` cities (sorted by city)."""
    lines = data.split(b"\n")
    cities = []
    for i, line in enumerate(lines[1:], start=1):
        city = line.split(b",")[0]
        if city not in cities:
            cities.append(city)
            if len(cities) == kept + 1:
                return b"\n".join(lines[:i]) + b"\n"
    raise AssertionError("not enough cities")


def test_real_table_cut_at_a_line_boundary_is_refused(raw_csv, texas):
    frame = pd.read_csv(io.BytesIO(cut_after_cities(raw_csv, 27)))
    out = check_completeness(frame, texas, "city", TIME)
    segments = only([f for f in out if f.rule == "expected_segments"])
    assert segments.severity == "error" and segments.count == 19
    assert segments.examples == [
        "McAllen",
        "Midland",
        "Montgomery County",
        "NE Tarrant County",
        "Nacogdoches",
    ]
    rows = only([f for f in out if f.rule == "rows_per_period"])
    assert rows.severity == "error" and rows.examples[0] == "2000-01: 27 rows"


def test_real_table_passes_every_completeness_rule(raw_csv, texas):
    frame = parse_table(read_source("package://plotnine/data/txhousing.csv"))
    assert check_completeness(frame, texas, "city", TIME) == []
    rules = texas.completeness
    assert rules.expected_segments == "allowed" and rules.last_period_not_before == "2015-07"
    assert (rules.rows_per_period.min, rules.rows_per_period.max) == (44, 46)


# --------------------------------------------------------------------------- last period


def test_last_period_too_early_names_the_last_period_found(small, panel):
    cut = panel[panel["year"] < 2004]
    f = only(failures(cut, small, "last_period"))
    assert (f.column, f.examples, f.severity) == ("year+month", ["2003-12"], "error")
    assert "the last period of the table is 2003-12" in f.message and "2004-12" in f.message


def test_last_period_can_be_downgraded(tmp_path, panel):
    text = SMALL.replace("  rows_per_period", "  warn: [last_period]\n  rows_per_period")
    f = only(failures(panel[panel["year"] < 2004], contract_of(tmp_path, text), "last_period"))
    assert f.severity == "warn"


# --------------------------------------------------------------------------- rows per period


def test_rows_per_period_names_periods_and_counts(small, panel):
    short = drop(drop(panel, "A", 2002, [5]), "B", 2002, [5])
    extra = panel[(panel["year"] == 2003) & (panel["month"] == 2)].iloc[[0]].assign(city="D")
    table = pd.concat([short, extra], ignore_index=True)
    f = only(failures(table, small, "rows_per_period"))
    assert (f.column, f.count, f.severity) == ("year+month", 2, "error")
    assert f.examples == ["2002-05: 1 rows", "2003-02: 4 rows"]
    assert "must be 3..3" in f.message and "2 of 60 period(s)" in f.message


def test_a_month_missing_for_every_segment_counts_zero_rows(small, panel):
    table = panel[~((panel["year"] == 2001) & (panel["month"] == 7))]
    assert only(failures(table, small, "rows_per_period")).examples == ["2001-07: 0 rows"]


def test_rows_per_period_share_of_median(tmp_path):
    segments = [f"S{i}" for i in range(10)]
    frame = drop(make_panel(segments=segments), "S1", 2001, [3])
    frame = drop(drop(frame, "S2", 2002, [3]), "S3", 2002, [3])
    text = SMALL.replace(
        "rows_per_period: {min: 3, max: 3}", "rows_per_period: {min_share_of_median: 0.85}"
    ).replace("  expected_segments: allowed\n", "")
    f = only(failures(frame, contract_of(tmp_path, text), "rows_per_period"))
    assert f.examples == ["2002-03: 8 rows"] and ">= 85% of the median" in f.message  # fmt: skip


@pytest.mark.parametrize(
    "value,fragment",
    [
        ("{min: 4, max: 3}", "'completeness.rows_per_period.max' must be >= min 4"),
        ("{}", "set at least one of min, max, min_share_of_median"),
        ("{min_share_of_median: 1.5}", "'completeness.rows_per_period.min_share_of_median'"),
        ("{mn: 3}", "unknown contract key 'completeness.rows_per_period.mn'"),
    ],
)
def test_invalid_rows_per_period_is_refused(tmp_path, value, fragment):
    text = SMALL.replace("rows_per_period: {min: 3, max: 3}", f"rows_per_period: {value}")
    with pytest.raises(ContractError) as info:
        contract_of(tmp_path, text)
    assert fragment in str(info.value), str(info.value)


# --------------------------------------------------------------------------- gaps


def test_a_missing_year_is_a_warning_naming_segment_and_months(small, panel):
    table = drop(panel, "B", 2001)
    out = failures(table, small)
    gap = only([f for f in out if f.rule == "gaps"])
    assert (gap.column, gap.severity, gap.count) == ("city", "warn", 12)
    assert gap.examples == ["B: 2001-01..2001-12 (12 months)"]
    assert "B: 2001-01..2001-12 (12 months)" in gap.message
    assert "12 period(s) missing inside the history of 1 segment(s)" in gap.message
    # the same months also leave 2 rows per period: the contract's bounds say so separately
    assert only([f for f in out if f.rule == "rows_per_period"]).count == 12


def test_gaps_are_capped_and_several_ranges_of_a_segment_listed(tmp_path):
    segments = [f"S{i}" for i in range(8)]
    frame = make_panel(segments=segments)
    for s in segments:
        frame = drop(frame, s, 2001, [2])
    for month in (4, 6, 8, 10):
        frame = drop(frame, "S0", 2002, [month])
    text = "\n".join(line for line in SMALL.splitlines() if "expected" not in line)
    text = text.replace("rows_per_period: {min: 3, max: 3}", "gaps: warn")
    gap = only(failures(frame, contract_of(tmp_path, text)))
    assert gap.count == 12 and len(gap.examples) == 5
    assert gap.examples[0] == (
        "S0: 2001-02 (1 month), 2002-04 (1 month), 2002-06 (1 month), and 2 more gap(s) "
        "(5 period(s) missing)"
    )
    assert gap.examples[1:] == [f"S{i}: 2001-02 (1 month)" for i in range(1, 5)]
    assert "8 segment(s)" in gap.message and gap.message.endswith("; ...")


def test_gaps_level_error_and_ignore(tmp_path, panel):
    table = drop(panel, "C", 2003, [1, 2])
    base = SMALL.replace("rows_per_period: {min: 3, max: 3}", "rows_per_period: {min: 2}")
    text = base.replace("  rows_per_period: {min: 2}", "  rows_per_period: {min: 2}\n  gaps: error")
    assert [(f.rule, f.severity) for f in failures(table, contract_of(tmp_path, text))] == [
        ("gaps", "error")
    ]
    text = base.replace(
        "  rows_per_period: {min: 2}", "  rows_per_period: {min: 2}\n  gaps: ignore"
    )
    assert failures(table, contract_of(tmp_path, text)) == []


def test_late_start_and_early_end_are_not_gaps(small, panel):
    table = panel[~((panel["city"] == "A") & (panel["year"] == 2000))]
    table = table[~((table["city"] == "B") & (table["year"] == 2004))]
    assert failures(table, small, "gaps") == []


def test_validate_reports_gaps_in_its_json_and_log(tmp_path, caplog):
    params = load_params(ROOT / "params.yaml")
    raw = parse_table(read_source("package://plotnine/data/txhousing.csv"))
    table = drop(raw, "Austin", 2005)
    contract = load_contract(ROOT / "contract.yaml")
    with caplog.at_level("WARNING", logger="panelcast.pipeline.validate"):
        validated, result, text = validate(
            table, contract, params.problem, params.prepare, "snap", "contract"
        )
    assert validated is not None and result["passed"] is True
    # prepare inserts the missing year (fill_missing), counted; the gap is still named
    assert result["prepare"]["periods_inserted"] == 12
    assert result["prepare"]["inserted_by_segment"] == {"Austin": 12}
    assert len(validated) == len(raw)
    gap = only([f for f in result["failures"] if f["rule"] == "gaps"])
    assert gap["severity"] == "warn" and gap["examples"] == ["Austin: 2005-01..2005-12 (12 months)"]
    assert any("Austin: 2005-01..2005-12 (12 months)" in r.getMessage() for r in caplog.records)
    assert "rule 'gaps'" in text
    dumps_json(result)


def test_completeness_skips_unusable_time_columns(small, panel):
    panel["month"] = "January"  # not a month number: check() names it (time_readable)
    assert failures(panel, small, "rows_per_period") == []
    assert failures(panel, small, "gaps") == []
