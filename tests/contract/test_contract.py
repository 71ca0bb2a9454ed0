"""Bad inputs against the real data contract: every error names the column and the rule;
a bad contract file is refused naming the file, the key and the value."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from panelcast.core.errors import ContractError
from panelcast.data.contract import check, format_failures, load_contract, report
from panelcast.data.sources import SourceError, parse_table, read_source

from ..conftest import ROOT
from .conftest import TIME


@pytest.fixture(scope="module")
def real():
    return parse_table(read_source("package://plotnine/data/txhousing.csv"))


@pytest.fixture(scope="module")
def contract():
    return load_contract(ROOT / "contract.yaml")


def errors(frame, contract, **kw):
    return [f for f in check(frame, contract, TIME, **kw) if f.severity == "error"]


def test_real_data_passes_with_counted_warnings(real, contract):
    failures = check(real, contract, TIME)
    assert not [f for f in failures if f.severity == "error"]
    missing = {f.column: f.count for f in failures if f.rule == "missing"}
    assert missing["sales"] == 568  # the target is missing in some rows: counted, not dropped
    assert report(failures, "f", "c", len(real))["passed"] is True


def mutate_missing_column(d):
    return d.drop(columns=["median"])


def mutate_wrong_type(d):
    d = d.copy()
    d["sales"] = d["sales"].astype(str)
    d.loc[5, "sales"] = "1,234"
    return d


def mutate_out_of_range(d):
    d = d.copy()
    d.loc[10, "inventory"] = 999.0
    return d


def mutate_negative_sales(d):
    d = d.copy()
    d.loc[3, "sales"] = -5.0
    return d


def mutate_duplicate_key(d):
    return pd.concat([d, d.iloc[[7]]], ignore_index=True)


def mutate_unseen_city(d):
    d = d.copy()
    d.loc[0, "city"] = "Atlantis"
    return d


def mutate_all_target_missing(d):
    d = d.copy()
    d["sales"] = np.nan
    return d


def mutate_month_13(d):
    d = d.copy()
    d.loc[4, "month"] = 13
    return d


def mutate_future(d):
    d = d.copy()
    d.loc[4, "year"] = 2031
    return d


def mutate_constant(d):
    d = d.copy()
    d["listings"] = 1.0
    return d


def mutate_extra_column(d):
    return d.assign(comment="x")


def mutate_missing_burst(d):
    d = d.copy()
    d.loc[d.index[:2000], "median"] = np.nan
    return d


def mutate_too_few_rows(d):
    return d.iloc[:500]


@pytest.mark.parametrize(
    "mutate,column,rule,example",
    [
        (mutate_missing_column, "median", "required", None),
        (mutate_wrong_type, "sales", "type", "1,234"),
        (mutate_out_of_range, "inventory", "max", 999.0),
        (mutate_negative_sales, "sales", "min", -5.0),
        (mutate_duplicate_key, "city+year+month", "unique_key", None),
        (mutate_unseen_city, "city", "allowed", "Atlantis"),
        (mutate_all_target_missing, "sales", "max_missing", None),
        (mutate_month_13, "month", "max", 13),
        (mutate_future, "year+month", "not_after", "2031-05"),
        (mutate_constant, "listings", "not_constant", 1.0),
        (mutate_extra_column, None, "extra_columns", "comment"),
        (mutate_missing_burst, "median", "max_missing", None),
        (mutate_too_few_rows, None, "min_rows", 500),
    ],
)
def test_bad_input_names_column_rule_and_values(real, contract, mutate, column, rule, example):
    found = errors(mutate(real), contract)
    match = [f for f in found if f.rule == rule and f.column == column]
    assert match, f"expected an error for column {column!r} rule {rule!r}, got {found}"
    text = format_failures(match, "data/raw/snapshot.parquet")
    assert "data/raw/snapshot.parquet" in text and f"rule '{rule}'" in text
    if column:
        assert repr(column) in text
    if example is not None:
        assert example in match[0].examples


def test_all_failures_reported_at_once(real, contract):
    bad = mutate_unseen_city(mutate_negative_sales(mutate_missing_column(real)))
    rules = {(f.column, f.rule) for f in errors(bad, contract)}
    assert {("median", "required"), ("sales", "min"), ("city", "allowed")} <= rules


def test_no_future_uses_today(real, contract):
    d = real.copy()
    assert not [f for f in errors(d, contract, today=dt.date(2026, 1, 1)) if f.rule == "no_future"]
    found = [f for f in errors(d, contract, today=dt.date(2010, 1, 1)) if f.rule == "no_future"]
    assert found and found[0].column == "year+month"


@pytest.mark.parametrize(
    "content,fragment",
    [(b"", "empty"), (b"city,year,month,sales\nAbilene,2000,1,72\nAbilene,2000,2", "truncated")],
)
def test_empty_and_truncated_files(tmp_path, content, fragment):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=fragment) as info:
        parse_table(read_source(str(path)))
    assert "bad.csv" in str(info.value)


# --------------------------------------------------------------------------- the contract file


def contract_file(tmp_path, edit):
    """A copy of the real contract.yaml changed by ``edit`` (text in, text out)."""
    path = tmp_path / "contract.yaml"
    path.write_text(edit((ROOT / "contract.yaml").read_text()))
    return path


def refused(path) -> str:
    with pytest.raises(ContractError) as info:
        load_contract(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text, text
    assert "params" not in text, text
    return text


YEAR = "  year: {type: integer, min: 1990, max: 2100}"


def test_duplicate_key_is_named_with_its_line(tmp_path):
    path = contract_file(tmp_path, lambda t: t.replace(YEAR, YEAR + "\n  year: {type: number}"))
    text = refused(path)
    line = (ROOT / "contract.yaml").read_text().splitlines().index(YEAR) + 2
    assert f"line {line}, column 3: duplicate key 'columns.year'" in text, text
    top = refused(contract_file(tmp_path, lambda t: t + "min_rows: 5\n"))
    assert "duplicate key 'min_rows'" in top and "first given at line" in top, top


@pytest.mark.parametrize(
    "edit,fragment",
    [
        (
            lambda t: t.replace("  month: {", "  month: &m {") + "  day: *m\n",
            "YAML anchor '&m' is not allowed",
        ),
        (lambda t: 'a: &a ["x", "x"]\nb: [*a, *a]\n', "YAML anchor '&a' is not allowed"),
    ],
    ids=["anchor_and_alias", "alias_bomb"],
)
def test_anchors_and_aliases_are_refused(tmp_path, edit, fragment):
    assert fragment in refused(contract_file(tmp_path, edit))


def test_unknown_warn_rule_is_named_with_the_allowed_rules(tmp_path):
    sales = "sales: {type: number, nullable: true, max_missing: 0.10, min: 0"
    path = contract_file(tmp_path, lambda t: t.replace(sales, sales + ", warn: [min, allowed]"))
    text = refused(path)
    assert "'columns.sales.warn[1]'" in text and "got 'allowed'" in text, text
    assert "max_missing, type, finite, max_abs, min, max, not_constant" in text, text


def test_warn_rule_downgrades_a_failure(tmp_path, real):
    sales = "sales: {type: number, nullable: true, max_missing: 0.10, min: 0"
    path = contract_file(tmp_path, lambda t: t.replace(sales, sales + ", warn: [min]"))
    found = check(mutate_negative_sales(real), load_contract(path), TIME)
    assert [f.severity for f in found if f.rule == "min" and f.column == "sales"] == ["warn"]


@pytest.mark.parametrize(
    "edit,fragment",
    [
        (
            lambda t: t.replace("sales: {type: number,", "sales: {tpye: number, type: number,"),
            "unknown contract key 'columns.sales.tpye' (allowed keys of 'columns.sales': type, "
            "nullable, min, max, allowed, max_missing, allow_constant, allow_infinite, max_abs, "
            "warn), got 'number'",
        ),
        (
            lambda t: t.replace("min_rows: 1000", "min_row: 1000"),
            "unknown contract key 'min_row' (allowed keys at the top level: columns, key, "
            "min_rows, extra_columns, time, completeness), got 1000",
        ),
        (
            lambda t: t.replace("max_missing: 0.10", "max_missing: 3", 1),
            "'columns.sales.max_missing' must be in [0, 1], got 3",
        ),
        (
            lambda t: t.replace("key: [city, year, month]", "key: [city, yr]"),
            "'key[1]' must be a column declared under columns",
        ),
        (lambda t: t.replace("max: 12}", "max: '12'}"), "'columns.month.max' must be a number"),
        (lambda t: t.replace("max: 12}", "max: .nan}"), "'columns.month.max' must be a finite"),
        (lambda t: t.replace("min: 1, max: 12}", "min: 13, max: 12}"), "max' must be >= min 13"),
        (lambda t: t.replace("not_after: 2015-07", "not_after: 2015-13"), "'time.not_after'"),
        (lambda t: t.replace("extra_columns: error", "extra_columns: ignore"), "'extra_columns'"),
        (
            lambda t: t.replace(
                "month: {type: integer,",
                "month: {type: integer, nullable: false, max_missing: 0.1,",
            ),
            "'columns.month.max_missing' applies only to a nullable column",
        ),
    ],
)
def test_invalid_contract_names_file_key_and_value(tmp_path, edit, fragment):
    assert fragment in refused(contract_file(tmp_path, edit))


def test_absent_and_empty_contract(tmp_path):
    with pytest.raises(ContractError, match="not found"):
        load_contract(tmp_path / "absent.yaml")
    with pytest.raises(ContractError, match="empty"):
        load_contract(contract_file(tmp_path, lambda t: ""))


def test_duplicate_keys_with_missing_key_values_are_reported_not_crashed():
    from panelcast.data.contract import check as check_rows
    from panelcast.data.contract import load_contract as load

    from ..conftest import ROOT

    frame = pd.DataFrame(
        {"city": [None, None], "year": [2010, 2010], "month": [1, 1], "sales": [1.0, 1.0]}
    )
    failures = check_rows(frame, load(ROOT / "contract.yaml"), TIME)
    dup = [f for f in failures if f.rule == "unique_key"]
    assert dup and dup[0].count == 2 and "<missing>|2010|1" in dup[0].examples
