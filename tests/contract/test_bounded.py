"""Bounded whatever the input: every echoed value is cut (with its length) and JSON-safe, the
number of examples is capped, only the reported examples are formatted, and an invalid
contract file gives a bounded error."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest

import panelcast.data.contract as contract_module
from panelcast.core.errors import ContractError
from panelcast.core.io import dumps_json
from panelcast.data.contract import (
    MAX_SHOWN,
    N_EXAMPLES,
    check,
    check_completeness,
    example,
    format_failures,
    load_contract,
    report,
)

from ..conftest import ROOT, make_panel
from .conftest import TIME

BIG = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def texas():
    return load_contract(ROOT / "contract.yaml")


@pytest.mark.parametrize(
    "value,expected",
    [
        (None, None),
        (np.nan, None),
        (pd.NA, None),
        (pd.NaT, None),
        (np.datetime64("NaT"), None),
        (True, True),
        (np.bool_(False), False),
        (np.int64(7), 7),
        (2.5, 2.5),
        (np.inf, "inf"),
        (-np.inf, "-inf"),
        ("Austin", "Austin"),
        (b"ab", "b'ab'"),
        (decimal.Decimal("1.50"), "1.50"),
        (pd.Timestamp("2015-07-01", tz="UTC"), "2015-07-01 00:00:00+00:00"),
        (np.datetime64("2015-07-01T00:00:00.000000000"), "2015-07-01T00:00:00.000000000"),
        (dt.date(2015, 7, 1), "2015-07-01"),
        (2**70, "<integer of 71 bits>"),
    ],
)
def test_examples_are_json_safe(value, expected):
    shown = example(value)
    assert shown == expected
    json.dumps(shown, allow_nan=False)


@pytest.mark.parametrize(
    "value,length",
    [("x" * BIG, BIG), (b"y" * BIG, BIG), (["z" * 100] * 1000, None)],
    ids=["text", "bytes", "list"],
)
def test_long_values_are_cut_with_their_length(value, length):
    shown = example(value)
    assert len(shown) <= MAX_SHOWN + 40, len(shown)
    if length is not None:
        assert shown.endswith(
            f"... ({length:,} {'bytes' if isinstance(value, bytes) else 'characters'})"
        )


def bounded(failures, frame):
    """The text and JSON report of ``failures``; assert they are small."""
    text = format_failures(failures, "data/raw/snapshot.parquet")
    data = dumps_json(report(failures, "data/raw/snapshot.parquet", "contract.yaml", len(frame)))
    longest = max(len(line) for line in text.splitlines())
    assert longest < 1500 and len(data) < 20_000, (longest, len(data))
    return text, data


def test_a_huge_cell_gives_bounded_lines_and_report(texas):
    frame = make_panel(segments=("Austin", "Dallas"))
    frame["city"] = frame["city"].astype(object)
    frame.loc[5, "city"] = "c" * BIG
    frame["sales"] = frame["sales"].astype(object)
    frame.loc[6, "sales"] = "s" * BIG
    failures = check(frame, texas, TIME) + check_completeness(frame, texas, "city", TIME)
    text, data = bounded(failures, frame)
    city = [f for f in failures if f.column == "city" and f.rule == "allowed"][0]
    assert city.examples == ["c" * MAX_SHOWN + f"... ({BIG:,} characters)"]
    sales = [f for f in failures if f.column == "sales" and f.rule == "type"][0]
    assert sales.examples[0].endswith(f"({BIG:,} characters)")
    assert f"({BIG:,} characters)" in text and f"({BIG:,} characters)" in data


def test_huge_column_names_and_many_extra_columns_are_bounded(texas):
    frame = make_panel(segments=("Austin",))
    extra = pd.DataFrame({f"extra_{i}": 0 for i in range(500)}, index=frame.index)
    frame = pd.concat([frame.drop(columns=["median"]), extra], axis=1)
    frame["n" * BIG] = 1
    failures = check(frame, texas, TIME)
    text, _ = bounded(failures, frame)
    extra_failure = [f for f in failures if f.rule == "extra_columns"][0]
    assert extra_failure.count == 501 and len(extra_failure.examples) == N_EXAMPLES
    assert "and 496 more" in extra_failure.message
    required = [f for f in failures if f.rule == "required"][0]
    assert required.column == "median" and "and 497 more" in required.message
    assert "n" * (MAX_SHOWN + 1) not in text


def test_huge_key_values_are_cut(texas):
    frame = make_panel(segments=("Austin",)).iloc[:2]
    frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)
    frame["city"] = "k" * BIG
    failures = check(frame, texas, TIME)
    bounded(failures, frame)
    dup = [f for f in failures if f.rule == "unique_key"][0]
    assert dup.examples[0].endswith(f"({BIG + len('|2000|1'):,} characters)")


# --------------------------------------------------------------------------- work and memory


def bad_panel(rows: int) -> pd.DataFrame:
    """``rows`` rows with one key, negative sales, infinite volumes, wrong dates."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "city": pd.array(rng.choice(["Austin", "Atlantis"], rows), dtype="str"),
            "year": np.full(rows, 2000),
            "month": np.ones(rows, dtype=int),
            "sales": -rng.random(rows) - 1,
            "volume": np.full(rows, np.inf),
            "median": rng.random(rows) * 1e300,
            "listings": rng.random(rows),
            "inventory": rng.random(rows),
            "date": np.full(rows, 2000.5),
        }
    )


def test_only_the_reported_examples_are_formatted(texas, monkeypatch):
    rows = 100_000
    frame = bad_panel(rows)
    calls = {"example": 0, "shorten": 0}
    for name in calls:
        original = getattr(contract_module, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(contract_module, name, counted)
    failures = check(frame, texas, TIME) + check_completeness(frame, texas, "city", TIME)
    counts = {f.rule: f.count for f in failures if f.column in (None, "city+year+month", "sales")}
    assert counts["unique_key"] == rows and counts["min"] == rows
    assert all(len(f.examples) <= N_EXAMPLES for f in failures)
    # every rule sees every row, but formats a few values per block of rows at most
    assert calls["example"] + calls["shorten"] < 500, calls


def test_memory_grows_with_the_rows_not_with_formatted_values(texas):
    rows = 100_000
    frame = bad_panel(rows)
    tracemalloc.start()
    try:
        failures = check(frame, texas, TIME) + check_completeness(frame, texas, "city", TIME)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert {f.rule for f in failures} >= {"unique_key", "min", "finite", "max_abs", "agree"}
    # about 100 bytes per row (a few arrays); formatting every duplicate key took 1.5 KB per row
    assert peak / rows < 400, f"{peak / rows:.0f} bytes per row"


# --------------------------------------------------------------------------- the contract file


def refused(tmp_path, text: str) -> str:
    path = tmp_path / "contract.yaml"
    path.write_text(text)
    with pytest.raises(ContractError) as info:
        load_contract(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert len(message) < 4200, len(message)
    return message


REAL = (ROOT / "contract.yaml").read_text()


@pytest.mark.parametrize(
    "edit,fragment",
    [
        (lambda t: t.replace("min_rows: 1000", f"min_rows: '{'9' * 1_000_000}'"), "'min_rows'"),
        (lambda t: t.replace("min_rows: 1000", f"min_rows: {'9' * 100_000}"), "digits"),
        (lambda t: t.replace("key: [city, year, month]", f"key: [{', '.join(['1'] * 5000)}]"),
         "and 4990 more problem(s)"),
        (lambda t: t + f"{'u' * 1000}: 1\n", "unknown contract key 'uuuu"),
        (lambda t: t + f"{'d' * 1000}: 1\n{'d' * 1000}: 2\n", "duplicate key 'dddd"),
        (lambda t: t.replace("  year: {", f"  year: {{{'w' * 1000}: 1, "), "allowed keys of"),
    ],
    ids=["huge_string", "huge_integer", "huge_list", "long_key", "long_duplicate", "long_inner"],
)  # fmt: skip
def test_invalid_contract_errors_are_bounded(tmp_path, edit, fragment):
    message = refused(tmp_path, edit(REAL))
    assert fragment in message, message[:600]


def test_duplicate_contract_key_is_still_refused(tmp_path):
    message = refused(tmp_path, REAL.replace("  gaps: warn\n", "  gaps: warn\n  gaps: error\n"))
    assert "duplicate key 'completeness.gaps'" in message
