"""From the collected table to the panel: one row per segment and period.

The ``prepare`` section of params.yaml turns the raw table (already checked against the
data contract) into the panel every later stage reads, in this order:

1. **filter**: keep the rows passing every rule (``equals``, ``in``, ``not_in``, ``min``,
   ``max``; all ANDed);
2. **wide to long**: value columns (listed, or matched by a regular expression) become
   rows, their name in the new segment column ``wide.segment`` and their value in
   ``wide.value``; the other columns are kept as they are;
3. **single series**: without ``problem.segment`` the segment column ``series`` is added,
   holding the target's name;
4. **aggregate**: rows sharing a segment and a period are combined per column (``sum``,
   ``mean``, ``count`` of present values, ``last`` row, ``min``, ``max``); the panel keeps
   the segment, the time columns and these columns only;
5. **missing periods**: the periods missing inside each segment's first..last span are
   inserted (values missing, ``count`` columns 0, ``fill_values`` where given); with
   ``fill_missing: false`` a gap is an error;
6. the panel is sorted by segment, then period.

Periods are read from the ``problem.time`` columns (:func:`~panelcast.data.timeaxis.time_index`);
the panel holds no period column: rows that are aggregated or inserted get time columns
re-derived from their period (:func:`~panelcast.data.timeaxis.time_columns_of`), so later
stages read time the same way. When no step applies the panel is the input sorted by
segment and time, nothing else changed. Every count goes to the report
(``metrics/validate.json``); every problem is a :class:`PrepareError` of one line naming
the params key.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import FilterRule, PrepareSpec, ProblemSpec, TimeSpec, WideSpec
from ..core.errors import DataError
from ..core.periods import SINGLE_SERIES, Calendar
from .contract import range_text, read_time, shorten, show
from .timeaxis import time_columns_of

__all__ = ["PrepareError", "Prepared", "prepare", "prepare_panel"]

logger = logging.getLogger(__name__)

#: Examples (keys, segments, columns) named in one message.
N_EXAMPLES = 5
#: Segments listed by name with their inserted periods in the report (the rest counted).
MAX_LISTED = 10
#: Columns listed when a message shows what the table holds.
MAX_COLUMNS = 12
#: Aggregations that need numbers.
NUMERIC_AGGREGATES = ("sum", "mean", "min", "max")


class PrepareError(DataError):
    """A ``prepare`` step cannot be applied to the table: one line naming the params key.

    ``key``: the params key at fault; ``rule``: the step or rule broken (``filter``,
    ``wide``, ``segment``, ``time_readable``, ``aggregate``, ``panel_key``, ``gaps``,
    ``fill_values``, ``target``, ``rows``); ``column``: the data column concerned, if any.
    """

    def __init__(self, key: str | None, rule: str, message: str, column: str | None = None):
        self.key, self.rule, self.column = key, rule, column
        self.detail = " ".join(message.split())
        super().__init__(f"params key {key!r}: {self.detail}" if key else self.detail)


@dataclass
class Prepared:
    """The panel, the report of the steps, and which panel rows were inserted."""

    panel: pd.DataFrame
    report: dict[str, Any]
    #: per panel row: True for a period inserted by ``fill_missing`` (not in the data)
    inserted: np.ndarray


def prepare_panel(
    frame: pd.DataFrame, problem: ProblemSpec, spec: PrepareSpec
) -> tuple[pd.DataFrame, dict]:
    """The panel of ``frame`` (see the module docstring) and the report of the steps.

    Raises :class:`PrepareError` (a :class:`~panelcast.core.errors.DataError`) naming the
    params key when a step cannot be applied.
    """
    prepared = prepare(frame, problem, spec)
    return prepared.panel, prepared.report


def prepare(frame: pd.DataFrame, problem: ProblemSpec, spec: PrepareSpec) -> Prepared:
    """:func:`prepare_panel`, also telling which rows were inserted (completeness rules
    look at the observed rows only)."""
    time = problem.time
    seg = problem.segment_column
    report: dict[str, Any] = {"rows_in": len(frame), "steps": []}
    if not len(frame):
        raise PrepareError(None, "rows", "the table has no rows; a panel needs at least one")
    data = frame
    if spec.filter:
        data = data.loc[_filter_mask(data, spec.filter)]
        report["steps"].append("filter")
        if not len(data):
            raise PrepareError(
                "prepare.filter",
                "filter",
                f"no row is left of {len(frame)} (every rule must hold: "
                f"{_describe_filters(spec.filter)}); loosen the rules",
            )
    report["rows_filtered_out"] = len(frame) - len(data)
    if spec.wide is not None:
        data = _wide_to_long(data, spec.wide, problem)
        report["steps"].append("wide")
    report["rows_after_wide"] = len(data)
    if problem.single_series:
        if SINGLE_SERIES in data.columns:
            raise PrepareError(
                "problem.segment",
                "segment",
                f"is absent (one series), so the panel's segment column is {SINGLE_SERIES!r}, "
                f"but the table already has a column {SINGLE_SERIES!r}; name it in "
                "problem.segment if it holds the segments, or rename it",
            )
        data = data.copy()
        data.insert(0, SINGLE_SERIES, problem.target)
        report["steps"].append("single_series")
    codes, names = _segment_codes(data, seg, problem)
    period = _periods(data, time)
    cal = time.calendar
    inserted = np.zeros(len(data), dtype=bool)
    if spec.aggregate:
        before = len(data)
        data, codes, period = _aggregate(data, codes, names, period, seg, spec.aggregate, time)
        report["steps"].append("aggregate")
        report["rows_aggregated"] = before - len(data)
        inserted = np.zeros(len(data), dtype=bool)
    else:
        report["rows_aggregated"] = 0
        _unique_keys(codes, names, period, cal, seg, time)
    _check_target(data, problem, spec)
    _check_fill_values(data, spec, seg, time)
    gaps = _gaps(codes, period)
    report["periods_inserted"] = gaps.total
    report["inserted_by_segment"] = _inserted_by_segment(gaps, names)
    if gaps.total and not spec.fill_missing:
        raise PrepareError(
            "prepare.fill_missing",
            "gaps",
            f"is false, but {report['periods_inserted']} period(s) are missing inside the "
            f"history of {gaps.segments} segment(s) of column {show(seg)}: "
            f"{_gap_examples(gaps, names, cal)}; set prepare.fill_missing: true to insert "
            "them with missing values",
            column=seg,
        )
    if gaps.total:
        data, codes, period, inserted = _insert_missing(
            data, codes, names, period, gaps, seg, spec, time
        )
        report["steps"].append("fill_missing")
    order = np.lexsort((period, codes))
    panel = data.take(order).reset_index(drop=True)
    inserted = inserted[order]
    report["segments"] = len(names)
    report["rows_out"] = len(panel)
    logger.info(
        "prepare: %d rows in, %d filtered out, %d after wide to long, %d aggregated away, "
        "%d period(s) inserted; panel of %d rows, %d segment(s)",
        report["rows_in"],
        report["rows_filtered_out"],
        report["rows_after_wide"],
        report["rows_aggregated"],
        report["periods_inserted"],
        report["rows_out"],
        report["segments"],
    )
    return Prepared(panel, report, inserted)


# --------------------------------------------------------------------------- messages


def _columns_text(frame: pd.DataFrame) -> str:
    """``['a', 'b', ...] and 3 more``: what the table holds, bounded."""
    shown = [show(c) for c in list(frame.columns)[:MAX_COLUMNS]]
    more = f" and {frame.shape[1] - MAX_COLUMNS} more" if frame.shape[1] > MAX_COLUMNS else ""
    return f"[{', '.join(shown)}]{more}"


def _list_text(values: list[Any]) -> str:
    """Up to :data:`N_EXAMPLES` values, and how many more."""
    shown = ", ".join(show(v) for v in values[:N_EXAMPLES])
    more = f" and {len(values) - N_EXAMPLES} more" if len(values) > N_EXAMPLES else ""
    return f"[{shown}]{more}"


def _describe_filters(rules: list[FilterRule]) -> str:
    parts = []
    for rule in rules:
        tests = []
        for name, value in (
            ("equals", rule.equals),
            ("in", rule.isin),
            ("not_in", rule.not_in),
            ("min", rule.min),
            ("max", rule.max),
        ):
            if value is not None:
                tests.append(f"{name} {shorten(repr(value), 60)}")
        parts.append(f"{show(rule.column)} {' and '.join(tests)}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- filter


def _filter_mask(frame: pd.DataFrame, rules: list[FilterRule]) -> np.ndarray:
    """Rows passing every rule (a missing value passes ``not_in`` only)."""
    keep = np.ones(len(frame), dtype=bool)
    for i, rule in enumerate(rules):
        key = f"prepare.filter[{i}]"
        if rule.column not in frame.columns:
            raise PrepareError(
                f"{key}.column",
                "filter",
                f"column {show(rule.column)} is not in the table; found columns "
                f"{_columns_text(frame)}",
            )
        series = frame[rule.column]
        if rule.equals is not None:
            keep &= (series == rule.equals).fillna(False).to_numpy(dtype=bool)
        if rule.isin is not None:
            keep &= series.isin(rule.isin).to_numpy(dtype=bool)
        if rule.not_in is not None:
            keep &= ~series.isin(rule.not_in).to_numpy(dtype=bool)
        if rule.min is not None or rule.max is not None:
            values = _numbers(series)
            if values is None:
                bound = "min" if rule.min is not None else "max"
                raise PrepareError(
                    f"{key}.{bound}",
                    "filter",
                    f"needs a column of numbers, but column {show(rule.column)} holds "
                    f"{_dtype_text(series)}; use equals, in or not_in",
                )
            with np.errstate(invalid="ignore"):
                if rule.min is not None:
                    keep &= values >= rule.min
                if rule.max is not None:
                    keep &= values <= rule.max
    return keep


def _numbers(series: pd.Series) -> np.ndarray | None:
    """The column as floats (missing: NaN), or None when it does not hold numbers."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_complex_dtype(dtype):
        return None
    if pd.api.types.is_numeric_dtype(dtype):
        return series.to_numpy(dtype=float, na_value=np.nan)
    if pd.api.types.is_object_dtype(dtype):
        kind = pd.api.types.infer_dtype(series, skipna=True)
        if kind in ("integer", "floating", "mixed-integer-float", "empty"):
            return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return None


def _dtype_text(series: pd.Series) -> str:
    dtype = series.dtype
    if pd.api.types.is_object_dtype(dtype):
        return f"dtype object ({pd.api.types.infer_dtype(series, skipna=True)} values)"
    return f"dtype {dtype}"


# --------------------------------------------------------------------------- wide to long


def _wide_to_long(frame: pd.DataFrame, wide: WideSpec, problem: ProblemSpec) -> pd.DataFrame:
    """The value columns of ``wide`` as rows: name in ``wide.segment``, value in ``wide.value``."""
    if problem.segment != wide.segment:
        raise PrepareError(
            "prepare.wide.segment",
            "wide",
            f"must be the panel's segment column problem.segment "
            f"({'absent' if problem.segment is None else show(problem.segment)}): the "
            f"segments of a wide table are its value columns, got {show(wide.segment)}",
        )
    if wide.columns is not None:
        absent = [c for c in wide.columns if c not in frame.columns]
        if absent:
            raise PrepareError(
                "prepare.wide.columns",
                "wide",
                f"column(s) {_list_text(absent)} are not in the table; found columns "
                f"{_columns_text(frame)}",
            )
        selected = list(dict.fromkeys(wide.columns))
        key = "prepare.wide.columns"
    else:
        assert wide.pattern is not None
        rx = re.compile(wide.pattern)
        selected = [c for c in frame.columns if rx.search(str(c))]
        key = "prepare.wide.pattern"
        if not selected:
            raise PrepareError(
                key,
                "wide",
                f"{show(wide.pattern)} matches none of the table's columns {_columns_text(frame)}",
            )
    time_cols = [c for c in selected if c in problem.time.columns]
    if time_cols:
        raise PrepareError(
            key,
            "wide",
            f"selects the time column(s) {_list_text(time_cols)} (problem.time); only value "
            f"columns may become segments, got {_list_text(selected)}",
        )
    ids = [c for c in frame.columns if c not in selected]
    for name, what in ((wide.segment, "segment"), (wide.value, "value")):
        if name in ids:
            raise PrepareError(
                f"prepare.wide.{what}",
                "wide",
                f"names the new {what} column, but the table already has a column "
                f"{show(name)}; choose another name",
            )
    long = frame.melt(
        id_vars=ids, value_vars=selected, var_name=wide.segment, value_name=wide.value
    )
    logger.info(
        "prepare: wide to long, %d column(s) (%s) became segments of %r: %d rows",
        len(selected),
        ", ".join(shorten(str(c), 40) for c in selected[:N_EXAMPLES]),
        wide.segment,
        len(long),
    )
    return long


# --------------------------------------------------------------------------- keys


def _segment_codes(
    frame: pd.DataFrame, seg: str, problem: ProblemSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted segment codes of the rows and the segment names (every row has a segment)."""
    if seg not in frame.columns:
        raise PrepareError(
            "problem.segment",
            "segment",
            f"column {show(seg)} is not in the table; found columns {_columns_text(frame)}",
            column=seg,
        )
    series = frame[seg]
    missing = series.isna().to_numpy(dtype=bool)
    if missing.any():
        raise PrepareError(
            "problem.segment",
            "segment",
            f"column {show(seg)} must give every row its segment; {int(missing.sum())} row(s) "
            f"have none (e.g. row(s) {np.flatnonzero(missing)[:N_EXAMPLES].tolist()})",
            column=seg,
        )
    try:
        codes, names = pd.factorize(series, sort=True)
    except TypeError:
        kinds = sorted({type(v).__name__ for v in series.to_numpy(dtype=object)[:10_000]})
        raise PrepareError(
            "problem.segment",
            "segment",
            f"column {show(seg)} holds values of several kinds ({', '.join(kinds)}) that "
            "cannot be ordered; give it one type",
            column=seg,
        ) from None
    return codes.astype(np.int64), np.asarray(names, dtype=object)


def _periods(frame: pd.DataFrame, time: TimeSpec) -> np.ndarray:
    """The period index of every row (an unreadable time is an error)."""
    ok, index, failures = read_time(frame, time)
    if failures:
        f = failures[0]
        shown = f"; e.g. {f.examples}" if f.examples else ""
        raise PrepareError("problem.time", f.rule, f"{f.message}{shown}", column=f.column)
    assert ok.all()
    return index


def _key_text(name: Any, period: int, cal: Calendar) -> str:
    return f"{shorten(str(name), 60)} {cal.format(period)}"


def _unique_keys(
    codes: np.ndarray,
    names: np.ndarray,
    period: np.ndarray,
    cal: Calendar,
    seg: str,
    time: TimeSpec,
) -> None:
    """Without ``aggregate``, a segment and a period must name one row."""
    order = np.lexsort((period, codes))
    c, t = codes[order], period[order]
    same = (c[1:] == c[:-1]) & (t[1:] == t[:-1])
    if not same.any():
        return
    shared = np.zeros(len(c), dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    first = shared.copy()
    first[1:] &= ~same  # the first row of each shared key
    n_rows, n_keys = int(shared.sum()), int(first.sum())
    examples = [_key_text(names[c[i]], int(t[i]), cal) for i in np.flatnonzero(first)[:3]]
    raise PrepareError(
        "prepare.aggregate",
        "panel_key",
        f"is not set, but {n_rows} rows share {n_keys} {seg}+period key(s) (the period of "
        f"{time.describe()}), e.g. {', '.join(examples)}; the panel needs one row per "
        "segment and period: declare prepare.aggregate to combine them",
        column=f"{seg}+{'+'.join(time.columns)}",
    )


# --------------------------------------------------------------------------- aggregate


def _aggregate(
    frame: pd.DataFrame,
    codes: np.ndarray,
    names: np.ndarray,
    period: np.ndarray,
    seg: str,
    how: dict[str, str],
    time: TimeSpec,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """One row per segment and period: the segment, the re-derived time columns and the
    aggregated columns (in the order of ``how``)."""
    absent = [c for c in how if c not in frame.columns]
    if absent:
        raise PrepareError(
            "prepare.aggregate",
            "aggregate",
            f"column(s) {_list_text(absent)} are not in the table; found columns "
            f"{_columns_text(frame)}",
        )
    reserved = [c for c in how if c == seg or c in time.columns]
    if reserved:
        raise PrepareError(
            "prepare.aggregate",
            "aggregate",
            f"column(s) {_list_text(reserved)} are the segment or the time: rows are "
            "grouped by them, they cannot be aggregated",
        )
    values: dict[str, pd.Series] = {}
    for col, fn in how.items():
        series = frame[col]
        if fn in NUMERIC_AGGREGATES and _numbers(series) is None:
            raise PrepareError(
                f"prepare.aggregate.{col}",
                "aggregate",
                f"{fn!r} needs a column of numbers, but column {show(col)} holds "
                f"{_dtype_text(series)}; use count or last",
                column=col,
            )
        if fn in NUMERIC_AGGREGATES and not pd.api.types.is_numeric_dtype(series.dtype):
            series = pd.to_numeric(series, errors="coerce")
        values[col] = series.reset_index(drop=True)
    keys = [pd.Series(codes), pd.Series(period)]
    work = pd.DataFrame(values)
    work["__position"] = np.arange(len(frame), dtype=np.int64)
    grouped = work.groupby(keys, sort=True)
    last = grouped["__position"].max().to_numpy()
    index = grouped.size().index
    g_codes = index.get_level_values(0).to_numpy(dtype=np.int64)
    g_period = index.get_level_values(1).to_numpy(dtype=np.int64)
    columns: dict[str, Any] = {seg: pd.Series(names[g_codes]).astype(frame[seg].dtype)}
    columns.update(time_columns_of(g_period, time))
    for col, fn in how.items():
        if fn == "sum":
            out = grouped[col].sum(min_count=1)
        elif fn == "mean":
            out = grouped[col].mean()
        elif fn == "count":
            out = grouped[col].count().astype(np.int64)
        elif fn == "min":
            out = grouped[col].min()
        elif fn == "max":
            out = grouped[col].max()
        else:  # last: the value of the group's last row, missing or not
            out = values[col].take(last)
        columns[col] = out.reset_index(drop=True)
    result = pd.DataFrame(columns)
    logger.info(
        "prepare: aggregated %d rows into %d (%s)",
        len(frame),
        len(result),
        ", ".join(f"{c}: {fn}" for c, fn in how.items()),
    )
    return result, g_codes, g_period


# --------------------------------------------------------------------------- missing periods


def _check_fill_values(frame: pd.DataFrame, spec: PrepareSpec, seg: str, time: TimeSpec) -> None:
    """``fill_values`` name numeric columns of the panel (not the segment or the time)."""
    for col in spec.fill_values:
        if col not in frame.columns:
            raise PrepareError(
                f"prepare.fill_values.{col}",
                "fill_values",
                f"column {show(col)} is not in the panel; its columns are {_columns_text(frame)}",
            )
        if col == seg or col in time.columns:
            raise PrepareError(
                f"prepare.fill_values.{col}",
                "fill_values",
                f"column {show(col)} is the segment or the time of inserted periods, which "
                "prepare sets itself",
            )
        if _numbers(frame[col]) is None:
            raise PrepareError(
                f"prepare.fill_values.{col}",
                "fill_values",
                f"gives a number, but column {show(col)} holds {_dtype_text(frame[col])}",
            )


@dataclass
class _Gaps:
    """The gaps inside the segments' spans: per gap, its segment code and first and last
    missing period."""

    code: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return self.end - self.start + 1

    @property
    def total(self) -> int:
        return int(self.lengths.sum())

    @property
    def segments(self) -> int:
        return len(np.unique(self.code))


def _gaps(codes: np.ndarray, period: np.ndarray) -> _Gaps:
    """Every gap inside a segment's first..last span."""
    order = np.lexsort((period, codes))
    c, t = codes[order], period[order]
    gap = np.flatnonzero((c[1:] == c[:-1]) & (t[1:] - t[:-1] > 1))
    return _Gaps(c[gap], t[gap] + 1, t[gap + 1] - 1)


def _inserted_by_segment(gaps: _Gaps, names: np.ndarray) -> dict[str, int]:
    """Inserted periods of the first :data:`MAX_LISTED` segments with gaps."""
    listed = np.unique(gaps.code)[:MAX_LISTED]
    lengths = gaps.lengths
    return {shorten(str(names[code])): int(lengths[gaps.code == code].sum()) for code in listed}


def _gap_examples(gaps: _Gaps, names: np.ndarray, cal: Calendar) -> str:
    shown = [
        f"{shorten(str(names[code]))}: {range_text(int(start), int(end), cal)}"
        for code, start, end in zip(
            gaps.code[:N_EXAMPLES], gaps.start[:N_EXAMPLES], gaps.end[:N_EXAMPLES], strict=True
        )
    ]
    n = len(gaps.code)
    more = f", and {n - N_EXAMPLES} more gap(s)" if n > N_EXAMPLES else ""
    return ", ".join(shown) + more


def _insert_missing(
    frame: pd.DataFrame,
    codes: np.ndarray,
    names: np.ndarray,
    period: np.ndarray,
    gaps: _Gaps,
    seg: str,
    spec: PrepareSpec,
    time: TimeSpec,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """``frame`` with a row for every missing period: values missing, ``count`` columns 0,
    ``fill_values`` where given; the time columns of every row re-derived from its period."""
    lengths = gaps.lengths
    m = int(lengths.sum())
    first_of_gap = np.repeat(np.cumsum(lengths) - lengths, lengths)
    new_period = np.repeat(gaps.start, lengths) + (np.arange(m, dtype=np.int64) - first_of_gap)
    new_codes = np.repeat(gaps.code, lengths)
    filler = frame.iloc[:0].reindex(pd.RangeIndex(m))
    filler[seg] = pd.Series(names[new_codes]).astype(frame[seg].dtype)
    for col, fn in (spec.aggregate or {}).items():
        if fn == "count":
            filler[col] = np.zeros(m, dtype=np.int64)
    for col, value in spec.fill_values.items():
        filler[col] = np.full(m, float(value))
    body = frame.reset_index(drop=True)
    out = pd.concat([body, filler], ignore_index=True)
    all_period = np.concatenate([period, new_period])
    for col, values in time_columns_of(all_period, time).items():
        out[col] = values
    inserted = np.concatenate([np.zeros(len(frame), dtype=bool), np.ones(m, dtype=bool)])
    logger.info(
        "prepare: inserted %d missing period(s) in %d segment(s)",
        m,
        gaps.segments,
    )
    return out, np.concatenate([codes, new_codes]), all_period, inserted


# --------------------------------------------------------------------------- the target


def _check_target(panel: pd.DataFrame, problem: ProblemSpec, spec: PrepareSpec) -> None:
    """The panel (before missing periods are inserted) must hold the target column."""
    if problem.target in panel.columns:
        return
    if spec.aggregate:
        raise PrepareError(
            "prepare.aggregate",
            "target",
            f"must aggregate the target column problem.target {show(problem.target)} (the "
            f"panel keeps only the aggregated columns), got "
            f"{_list_text(list(spec.aggregate))}",
            column=problem.target,
        )
    raise PrepareError(
        "problem.target",
        "target",
        f"column {show(problem.target)} is not in the prepared panel; its columns are "
        f"{_columns_text(panel)}",
        column=problem.target,
    )
