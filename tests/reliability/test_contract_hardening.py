"""The hardened data contract through the real pipeline (`dvc repro validate` in a copy of the
good repository). A CSV with an infinite value, a magnitude of 1e308, a date disagreeing with
year and month and a 5 MB cell, cut at a line boundary; a Parquet file with booleans as
numbers, datetimes, decimals and bytes; a bad contract file: each is refused with one line
per defect naming the file, the column, the rule and the values, no traceback, nothing
downstream run, output and metrics bounded, and the last good state recoverable byte for
byte. A year missing from one city passes with a warning naming the city and the months.
Independent defects share one table (the contract reports every failure at once), so the
module runs `dvc repro validate` five times."""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .helpers import (
    clone,
    diff_state,
    downstream,
    dvc,
    error_text,
    failed_stage,
    git_status,
    line_with_all,
    point_source_at,
    ran,
    real_frame,
    state,
)
from .helpers import recover as restore

SNAP = "data/raw/snapshot.parquet"
REPORT = "metrics/validate.json"
BIG = 5 * 1024 * 1024
#: Stages that must never start when validate refuses its input (or when only validate is
#: reproduced); whatever runs before validate (check_params, collect, ...) may.
AFTER_VALIDATE = downstream("validate")
#: Longest line the whole `dvc repro` output may hold, whatever the data.
MAX_LINE = 5000


def bad_csv(folder: Path) -> Path:
    """The real table with an infinite sales value, a volume of 1e308, a date disagreeing
    with its year and month, a 5 MB city name, written as CSV and cut at the line boundary
    before McAllen (the file is sorted by city: the last 19 of 46 cities vanish, the file
    stays well formed)."""
    d = real_frame()
    d.loc[3, "sales"] = np.inf
    d.loc[4, "volume"] = 1e308
    d.loc[17, "date"] = 2001.5
    d["city"] = d["city"].astype(object)
    d.loc[5, "city"] = "x" * BIG
    lines = d.to_csv(index=False).encode().split(b"\n")
    first = next(i for i, line in enumerate(lines) if line.split(b",")[0].strip(b'"') == b"McAllen")
    path = folder / "incoming.csv"
    path.write_bytes(b"\n".join(lines[:first]) + b"\n")
    return path


def bad_parquet(folder: Path) -> Path:
    """The real table in Parquet with booleans for sales, timezone-aware datetimes for date,
    Decimal medians and city names as bytes."""
    d = real_frame()
    d["sales"] = d["sales"] > 500
    starts = pd.to_datetime({"year": d["year"], "month": d["month"], "day": 1})
    d["date"] = starts.dt.tz_localize("UTC")
    d["median"] = [None if v != v else decimal.Decimal(f"{v:.0f}") for v in d["median"]]
    d["city"] = [c.encode() for c in d["city"]]
    path = folder / "incoming.parquet"
    d.to_parquet(path, index=False)
    return path


def year_missing(folder: Path) -> Path:
    d = real_frame()
    path = folder / "incoming.csv"
    d[~((d["city"] == "Austin") & (d["year"] == 2005))].to_csv(path, index=False)
    return path


@dataclass(frozen=True)
class Case:
    id: str
    source: Callable[[Path], Path]
    lines: tuple[tuple[str, ...], ...]  # each tuple: fragments that one error line must hold


#: Independent defects share one table (every failure is reported at once): one repro each.
CASES = [
    Case("csv", bad_csv, (
        (SNAP, "column 'sales'", "rule 'finite'", "['inf']", "finite numbers"),
        (SNAP, "column 'volume'", "rule 'max'", "[1e+308]", "above the maximum 1e+11"),
        (SNAP, "column 'volume'", "rule 'max_abs'", "[1e+308]", "|x| <= 1e+15"),
        (SNAP, "column 'date'", "rule 'agree'", "'row 17: 2001.5 for 2001-06'", "decimal_year"),
        (SNAP, "column 'city'", "rule 'allowed'", f"... ({BIG:,} characters)"),
        (SNAP, "column 'city'", "rule 'expected_segments'", "19 value(s)", "'McAllen'",
         "'Nacogdoches'", "19 of 46 expected segment(s)"),
        (SNAP, "column 'year+month'", "rule 'rows_per_period'", "'2000-01: 27 rows'"),
    )),
    Case("parquet", bad_parquet, (
        (SNAP, "column 'sales'", "rule 'type'", "[False, True]", "dtype bool"),
        (SNAP, "column 'date'", "rule 'type'", "datetime64[", "UTC", "'2000-01-01 00:00:00"),
        (SNAP, "column 'median'", "rule 'type'", "Decimal values", "'71400'"),
        (SNAP, "column 'city'", "rule 'type'", "bytes", '"b\'Abilene\'"'),
    )),
]  # fmt: skip


def refused(repo: Path, proc, case_lines) -> dict:
    """Every check of a refused input; returns the report the stage left."""
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0, said[-3000:]
    assert failed_stage(said) == "validate", said[-3000:]
    started = ran(proc.stdout)
    assert started[-1:] == ["validate"] and not AFTER_VALIDATE & set(started), started
    assert "Traceback" not in said, said[-3000:]
    assert max(len(line) for line in said.splitlines()) < MAX_LINE
    error = error_text(proc)
    for fragments in case_lines:
        assert line_with_all(error, fragments), f"no line with all of {fragments}:\n{error}"
    text = (repo / REPORT).read_text()
    assert len(text) < 20_000, len(text)
    report = json.loads(text)
    assert report["passed"] is False and report["file"] == SNAP
    return report


def recover(repo: Path, good_state: dict) -> None:
    """The documented way back gives the good state byte for byte."""
    checkout = restore(repo, plain=True)
    assert checkout.returncode == 0, checkout.stdout + checkout.stderr
    assert diff_state(good_state, state(repo)) == {}
    assert git_status(repo) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.xdist_group(f"hardening-{c.id}")) for c in CASES],
    ids=[c.id for c in CASES],
)  # fmt: skip
def test_bad_table_is_refused_by_validate(case, good, good_state, tmp_path):
    repo = clone(good, tmp_path / "repo")
    bad = tmp_path / "bad"
    bad.mkdir()
    point_source_at(repo, case.source(bad))
    proc = dvc(repo, "repro", "validate", timeout=300)
    refused(repo, proc, case.lines)
    recover(repo, good_state)


@pytest.mark.slow
def test_a_year_missing_from_one_city_passes_with_a_named_warning(good, good_state, tmp_path):
    repo = clone(good, tmp_path / "repo")
    bad = tmp_path / "bad"
    bad.mkdir()
    point_source_at(repo, year_missing(bad))
    proc = dvc(repo, "repro", "validate", timeout=300)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said[-3000:]
    started = ran(proc.stdout)
    assert "validate" in started and not AFTER_VALIDATE & set(started), started
    report = json.loads((repo / REPORT).read_text())
    assert report["passed"] is True
    gaps = [f for f in report["failures"] if f["rule"] == "gaps"]
    assert len(gaps) == 1 and gaps[0]["severity"] == "warn" and gaps[0]["column"] == "city"
    assert gaps[0]["examples"] == ["Austin: 2005-01..2005-12 (12 months)"]
    assert gaps[0]["count"] == 12
    assert line_with_all(said, ("WARN", "rule 'gaps'", "Austin: 2005-01..2005-12 (12 months)"))
    recover(repo, good_state)


@pytest.mark.slow
def test_a_bad_contract_file_is_refused_with_a_bounded_line(good, good_state, tmp_path):
    """Two contract files in turn, in one copy: a duplicate key (refused, naming its line) and
    a 5 MB value (refused, the line bounded)."""
    repo = clone(good, tmp_path / "repo")
    contract = repo / "contract.yaml"
    original = contract.read_text()
    year = "  year: {type: integer, min: 1990, max: 2100}"
    attempts = [
        (
            original.replace(year, year + "\n  year: {type: number}"),
            ("contract.yaml", "duplicate key 'columns.year'", "first given at line"),
        ),
        (
            original.replace("extra_columns: error", f"extra_columns: '{'e' * BIG}'"),
            ("contract.yaml", "'extra_columns' must be one of", "'eeee"),
        ),
    ]
    for text, fragments in attempts:
        contract.write_text(text)
        proc = dvc(repo, "repro", "validate", timeout=300)
        said = proc.stdout + proc.stderr
        assert proc.returncode != 0, said[-3000:]
        # check_params reads the contract before anything runs; validate would refuse it too
        failed = failed_stage(said)
        assert failed in ("check_params", "validate"), said[-3000:]
        started = ran(proc.stdout)
        assert started[-1:] in ([], [failed]) and not downstream(failed) & set(started), started
        assert "Traceback" not in said and max(map(len, said.splitlines())) < MAX_LINE
        assert line_with_all(error_text(proc), fragments), error_text(proc)
        recover(repo, good_state)
