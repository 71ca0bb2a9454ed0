"""The data contract: a declarative description of a usable table, checked all at once.

``contract.yaml`` lists the columns (type, nullability, ranges, finiteness, a magnitude
guard, allowed categories, missing-rate limit, constancy), the key, the minimum number of
rows, the time span, the redundant time columns that must agree with the row's period, the
completeness of the panel (expected segments, last period, rows per period, gaps inside a
segment's history) and what to do with extra columns. :func:`check` evaluates the rules
about columns and rows of the raw table, :func:`check_completeness` those about the whole
(prepared) panel; both return every failure (column, rule, count, up to five offending
values), nothing stops at the first problem and nothing is dropped silently.

Time is read from the ``problem.time`` columns of params.yaml with
:func:`~panelcast.data.timeaxis.time_index`, in the frequency declared there (hours to
years): a row whose time is missing or not readable is an error (rule ``time_readable``).
The contract's periods (``time.not_before``, ``time.not_after``,
``completeness.last_period_not_before``) are written in that frequency:
:func:`load_contract` reads them with the params' :class:`~panelcast.core.periods.Calendar`.

Whatever the input, a report stays small: counts are computed on whole columns (vectorised),
only the examples a failure reports are formatted, every echoed value is cut to
:data:`MAX_SHOWN` characters (with its original length) and made JSON-safe.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import (
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..core.config import (
    Period,
    StrictModel,
    TimeSpec,
    active_calendar,
    describe_validation_error,
    read_yaml_file,
    reading_periods_as,
    rule_error,
)
from ..core.errors import ContractError
from ..core.periods import MONTHLY, PERIODS_PER_YEAR, Calendar
from .timeaxis import time_index

logger = logging.getLogger(__name__)

Severity = Literal["error", "warn"]
ColumnType = Literal["integer", "number", "string", "datetime"]
#: Offending values reported per failure.
N_EXAMPLES = 5
#: Longest echo of one value (a cell, a column name) in a message or a report.
MAX_SHOWN = 80
#: Default magnitude guard of numeric columns: beyond it float64 no longer holds every
#: integer exactly (2**53 ~ 9.0e15), so no count or amount of a real table gets there.
MAX_ABS = 1e15
#: Problems of an invalid contract file shown in its error (the rest are counted).
MAX_PROBLEMS = 10
#: Rows scanned at a time when collecting examples (bounded work per step).
_CHUNK = 65_536
#: Tolerance of the decimal-year agreement, in periods (float32 dates stay well within it).
DECIMAL_YEAR_TOLERANCE = 0.01
#: Frequencies whose periods a decimal year can place (``year + (period - 1) / per year``).
DECIMAL_YEAR_FREQUENCIES = ("M", "Q")
NUMERIC = ("integer", "number")

#: The rules :func:`check` can raise for one column (``warn:`` may downgrade these only).
COLUMN_RULES = (
    "not_null",
    "max_missing",
    "type",
    "finite",
    "max_abs",
    "min",
    "max",
    "allowed",
    "not_constant",
)
#: Completeness rules that ``completeness.warn`` may downgrade (``gaps`` has its own level).
COMPLETENESS_RULES = ("expected_segments", "last_period", "rows_per_period")
#: The rule of rows whose time (``problem.time`` columns) is missing or not readable.
TIME_READABLE = "time_readable"
AgreeKind = Literal["decimal_year", "date"]


# --------------------------------------------------------------------------- bounded echoes


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis and its original length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def show(value: Any) -> str:
    """``repr`` of a name or value for a message: bounded, newlines escaped."""
    return repr(example(value))


def example(value: Any) -> Any:
    """A JSON-safe, bounded echo of one cell: numbers and booleans stay themselves, missing
    values become None, infinities and every other object (text, bytes, datetimes,
    decimals, arrays) a string of at most :data:`MAX_SHOWN` characters plus its length."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.datetime64 | np.timedelta64):
        return None if np.isnat(value) else shorten(str(value))
    if isinstance(value, np.generic) and not isinstance(value, np.void):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 63 else f"<integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        if value != value:
            return None
        return value if np.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return shorten(value)
    if isinstance(value, bytes | bytearray | memoryview):
        text = repr(bytes(value[:MAX_SHOWN]))
        return text if len(value) <= MAX_SHOWN else f"{text}... ({len(value):,} bytes)"
    try:
        text = str(value)
    except Exception:  # an object whose str() fails is still reported, by its type
        text = f"<{type(value).__name__}>"
    return shorten(text)


def _name(column: Any) -> str:
    """A column name as stored in a failure: text, bounded."""
    return shorten(str(column))


def _first_examples(
    mask: np.ndarray, render: Callable[[np.ndarray], list[Any]], limit: int = N_EXAMPLES
) -> list[Any]:
    """Up to ``limit`` distinct rendered examples of the rows where ``mask`` holds.

    ``render(positions)`` turns row positions into JSON-safe values. It is given a few rows
    first, then twice as many each time (never more than :data:`_CHUNK`), so distinct bad
    values cost a handful of renderings and one repeated value a few per block of rows.
    """
    out: list[Any] = []
    seen: set[str] = set()
    batch = 2 * limit
    for start in range(0, len(mask), _CHUNK):
        positions = np.flatnonzero(mask[start : start + _CHUNK]) + start
        i = 0
        while i < len(positions):
            for value in render(positions[i : i + batch]):
                key = repr(value)
                if key not in seen:
                    seen.add(key)
                    out.append(value)
                    if len(out) >= limit:
                        return out
            i += batch
            batch = min(2 * batch, _CHUNK)
    return out


def _distinct(values: Sequence[Any] | np.ndarray, limit: int = N_EXAMPLES) -> list[Any]:
    """Distinct values in order of appearance, stopping at ``limit`` (unhashable: by text)."""
    try:
        uniques = pd.unique(pd.Series(values, dtype=object))
    except TypeError:
        uniques = values
    out, seen = [], set()
    for value in uniques:
        shown = example(value)
        key = repr(shown)
        if key not in seen:
            seen.add(key)
            out.append(shown)
            if len(out) >= limit:
                break
    return out


def _values_at(series: pd.Series) -> Callable[[np.ndarray], list[Any]]:
    """Renderer of the cells of ``series`` at row positions (distinct, JSON-safe)."""
    return lambda positions: _distinct(series.iloc[positions].to_numpy(dtype=object))


# --------------------------------------------------------------------------- the contract model


def _bound(value: Any) -> Any:
    """A min/max/max_abs setting; a YAML number written ``1e9`` (read as text) is named."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise PydanticCustomError(
            "yaml_number",
            "must be a number (YAML reads {text} as text: write it with a dot and a signed "
            "exponent, 1.0e+9, or in full)",
            {"text": shorten(value)},
        )
    return value


class ColumnRule(StrictModel):
    """Rules for one column."""

    type: ColumnType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = Field(default=None, min_length=1)
    max_missing: float | None = Field(default=None, ge=0, le=1)
    allow_constant: bool = False
    allow_infinite: bool = False
    max_abs: float | None = Field(default=MAX_ABS, gt=0)
    warn: list[str] = Field(default_factory=list)

    _numbers = field_validator("min", "max", "max_abs", mode="before")(_bound)

    def raisable_rules(self) -> list[str]:
        """The rules :func:`check` can raise for a column with these settings."""
        numeric = self.type in NUMERIC
        possible = {
            "not_null": not self.nullable,
            "max_missing": self.nullable,
            "type": True,
            "finite": numeric and not self.allow_infinite,
            "max_abs": numeric and self.max_abs is not None,
            "min": numeric and self.min is not None,
            "max": numeric and self.max is not None,
            "allowed": self.type == "string" and self.allowed is not None,
            "not_constant": not self.allow_constant,
        }
        return [rule for rule in COLUMN_RULES if possible[rule]]

    @model_validator(mode="after")
    def _consistent(self) -> ColumnRule:
        numeric = self.type in NUMERIC
        for key in ("min", "max", "max_abs", "allow_infinite"):
            if key in self.model_fields_set and getattr(self, key) is not None and not numeric:
                raise rule_error(
                    key,
                    f"applies to integer or number columns, not type {self.type!r}",
                    getattr(self, key),
                )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise rule_error("max", f"must be >= min {self.min:g}", self.max)
        if self.allowed is not None and self.type != "string":
            raise rule_error(
                "allowed", f"applies to string columns, not type {self.type!r}", self.allowed
            )
        if self.max_missing is not None and not self.nullable:
            raise rule_error(
                "max_missing",
                "applies only to a nullable column (set nullable: true)",
                self.max_missing,
            )
        raisable = self.raisable_rules()
        for i, rule in enumerate(self.warn):
            if rule not in raisable:
                raise rule_error(
                    ("warn", i),
                    f"must name a rule this column can break: {', '.join(raisable)}",
                    rule,
                )
        return self


class TimeRule(StrictModel):
    """The time span of the table, read from the ``problem.time`` columns of params.yaml;
    periods in the frequency of ``problem.time.frequency``."""

    not_before: Period | None = None
    not_after: Period | None = None
    no_future: bool = True
    #: Redundant time columns that must give the row's period: ``{column: kind}``.
    agree: dict[str, AgreeKind] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ordered(self) -> TimeRule:
        cal = active_calendar()
        if self.not_before and self.not_after:
            if cal.parse(self.not_after) < cal.parse(self.not_before):
                raise rule_error(
                    "not_after",
                    f"must not be before not_before {self.not_before}",
                    self.not_after,
                )
        return self


def _segments(value: Any) -> str | list[str]:
    text = "must be 'allowed' (every value of the segment column's allowed list) or a list of "
    if value == "allowed":
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return value
    raise PydanticCustomError("segments", text + "segment names")


Segments = Annotated[str | list[str], PlainValidator(_segments, json_schema_input_type=Any)]


class RowsPerPeriod(StrictModel):
    """Bounds on the number of rows of each period between the first and the last."""

    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=1)
    min_share_of_median: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _some(self) -> RowsPerPeriod:
        if self.min is None and self.max is None and self.min_share_of_median is None:
            raise rule_error("min", "set at least one of min, max, min_share_of_median", {})
        if self.min is not None and self.max is not None and self.min > self.max:
            raise rule_error("max", f"must be >= min {self.min}", self.max)
        return self

    def describe(self) -> str:
        parts = []
        if self.min is not None or self.max is not None:
            low = "0" if self.min is None else str(self.min)
            high = "" if self.max is None else str(self.max)
            parts.append(f"{low}..{high}")
        if self.min_share_of_median is not None:
            parts.append(f">= {self.min_share_of_median:.0%} of the median")
        return " and ".join(parts)


class Completeness(StrictModel):
    """Rules about the whole prepared panel (after ``prepare`` of params.yaml): its segment
    column (``problem.segment``) and its periods (``problem.time``)."""

    expected_segments: Segments | None = None
    last_period_not_before: Period | None = None
    rows_per_period: RowsPerPeriod | None = None
    gaps: Literal["error", "warn", "ignore"] = "warn"
    warn: list[Literal["expected_segments", "last_period", "rows_per_period"]] = Field(
        default_factory=list
    )


class Contract(StrictModel):
    """A whole data contract."""

    columns: dict[str, ColumnRule] = Field(min_length=1)
    #: unique per row of the raw table (may be empty, e.g. for a wide table)
    key: list[str] = Field(default_factory=list)
    min_rows: int = Field(ge=0)
    extra_columns: Severity
    time: TimeRule = Field(default_factory=TimeRule)
    completeness: Completeness = Field(default_factory=Completeness)

    @model_validator(mode="after")
    def _key_declared(self) -> Contract:
        for i, name in enumerate(self.key):
            if name not in self.columns:
                raise rule_error(
                    ("key", i),
                    f"must be a column declared under columns: {', '.join(self.columns)}",
                    name,
                )
        kinds = {"decimal_year": NUMERIC, "date": ("string", "datetime")}
        for name, kind in self.time.agree.items():
            rule = self.columns.get(name)
            if rule is None:
                raise rule_error(
                    ("time", "agree", name),
                    f"must name a column declared under columns: {', '.join(self.columns)}",
                    name,
                )
            if rule.type not in kinds[kind]:
                raise rule_error(
                    ("time", "agree", name),
                    f"kind {kind!r} needs a column of type {' or '.join(kinds[kind])} "
                    f"(column {name!r} is {rule.type})",
                    kind,
                )
            cal = active_calendar()
            if kind == "decimal_year" and cal.frequency not in DECIMAL_YEAR_FREQUENCIES:
                raise rule_error(
                    ("time", "agree", name),
                    f"kind 'decimal_year' needs monthly or quarterly periods (M or Q), not "
                    f"{cal.unit}s (frequency {cal.frequency!r})",
                    kind,
                )
        return self


@dataclass
class Failure:
    """One broken rule."""

    severity: Severity
    column: str | None
    rule: str
    count: int
    examples: list[Any]
    message: str


class _FirstErrors:
    """The first problems of a :class:`ValidationError` (what its description reads)."""

    def __init__(self, exc: ValidationError, limit: int):
        self._errors = exc.errors(include_url=False)[:limit]

    def errors(self) -> list[dict]:
        return self._errors


def _cut_middle(text: str, limit: int) -> str:
    """``text`` with its middle cut out when longer than ``limit`` (head and tail kept)."""
    if len(text) <= limit:
        return text
    head, tail = limit // 2, (limit * 2) // 5
    return f"{text[:head]} ...[{len(text) - head - tail:,} characters cut]... {text[-tail:]}"


def bounded_message(text: str, part_limit: int = 400, limit: int = 4000) -> str:
    """``text`` (problems joined by "; ") with each problem cut in its middle beyond
    ``part_limit`` characters and the whole beyond ``limit``: an error about a huge key or
    value stays small and still says where and what."""
    parts = [_cut_middle(part, part_limit) for part in text.split("; ")]
    return _cut_middle("; ".join(parts), limit)


def load_contract(path: str | Path, calendar: Calendar = MONTHLY) -> Contract:
    """Read ``contract.yaml`` strictly: unknown keys, wrong types, duplicate keys and YAML
    anchors/aliases are errors (:class:`ContractError`) naming the file and the key; the
    message is bounded whatever the file holds.

    Periods are read in ``calendar`` (``params.problem.calendar``; monthly by default).
    """
    try:
        data = read_yaml_file(path, "data contract", ContractError)
    except ContractError as exc:
        raise ContractError(bounded_message(str(exc))) from None
    except ValueError as exc:  # PyYAML building a value Python refuses (a 5,000-digit integer)
        raise ContractError(bounded_message(f"{path}: not a usable YAML value: {exc}")) from None
    try:
        with reading_periods_as(calendar):
            return Contract.model_validate(data)
    except ValidationError as exc:
        count = exc.error_count()
        text = describe_validation_error(
            _FirstErrors(exc, MAX_PROBLEMS),  # type: ignore[arg-type]
            Contract,
            "contract",
        )
        if count > MAX_PROBLEMS:
            text += f"; and {count - MAX_PROBLEMS} more problem(s)"
        raise ContractError(bounded_message(f"{path}: {text}")) from None


# --------------------------------------------------------------------------- column types


def _found(series: pd.Series) -> str:
    """What a column holds, for a type error: its dtype and, for objects, the values' kind."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return f"dtype {dtype} (booleans: true/false are not numbers)"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return f"dtype {dtype} (datetimes)"
    if pd.api.types.is_object_dtype(dtype):
        kind = pd.api.types.infer_dtype(series, skipna=True)
        names = {
            "string": "text, not numbers",
            "decimal": "Decimal values",
            "bytes": "bytes",
            "boolean": "booleans: true/false are not numbers",
            "datetime": "datetimes",
            "date": "dates",
        }
        return f"dtype object ({names.get(kind, kind + ' values')})"
    if pd.api.types.is_string_dtype(dtype):
        return f"dtype {dtype} (text, not numbers)"
    return f"dtype {dtype}"


def _numeric_view(series: pd.Series) -> pd.Series | None:
    """The column as float64, or None when it does not hold numbers (booleans included)."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_complex_dtype(dtype):
        return None
    if pd.api.types.is_numeric_dtype(dtype):
        try:
            return series.astype(float)
        except (TypeError, ValueError):
            return None
    if pd.api.types.is_object_dtype(dtype):
        kind = pd.api.types.infer_dtype(series, skipna=True)
        if kind in ("integer", "floating", "mixed-integer-float", "empty"):
            return pd.to_numeric(series, errors="coerce").astype(float)
    return None


def _not_numbers(series: pd.Series, nulls: np.ndarray) -> np.ndarray:
    """Rows of a non-numeric column to report: text that does not parse as a number, or
    every present value (numbers stored as text, booleans, datetimes: all the wrong type)."""
    present = ~nulls
    kind = pd.api.types.infer_dtype(series, skipna=True)
    if kind in ("string", "mixed", "mixed-integer"):
        coerced = pd.to_numeric(series.astype(object), errors="coerce").to_numpy(dtype=float)
        unparsable = present & np.isnan(coerced)
        if unparsable.any():
            return unparsable
    return present


def _string_problem(series: pd.Series, nulls: np.ndarray) -> tuple[np.ndarray, str] | None:
    """Rows of a string column that are not text, and what the column holds; None if fine."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        cats = dtype.categories
        if pd.api.types.infer_dtype(cats, skipna=True) in ("string", "empty"):
            return None
        return ~nulls, f"dtype category of {cats.dtype}"
    if pd.api.types.is_object_dtype(dtype):
        kind = pd.api.types.infer_dtype(series, skipna=True)
        if kind in ("string", "empty"):
            return None
        is_text = np.fromiter((isinstance(v, str) for v in series.to_numpy()), bool, len(series))
        return ~nulls & ~is_text, f"dtype object ({kind} values)"
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return None
    return ~nulls, _found(series).replace("are not numbers", "are not text")


def _datetime_problem(series: pd.Series, nulls: np.ndarray) -> tuple[np.ndarray, str] | None:
    """Rows of a datetime column that are not datetimes; None if fine."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return None
    if pd.api.types.is_object_dtype(series.dtype):
        kind = pd.api.types.infer_dtype(series, skipna=True)
        if kind in ("datetime", "datetime64", "date", "empty"):
            return None
    return ~nulls, _found(series).replace(", not numbers", "")


# --------------------------------------------------------------------------- checking


class _Report:
    """Collects failures; applies a rule's ``warn:`` downgrade."""

    def __init__(self) -> None:
        self.failures: list[Failure] = []

    def add(
        self,
        column: Any,
        rule: str,
        count: int,
        examples: list[Any],
        message: str,
        severity: Severity = "error",
        downgrade: Sequence[str] = (),
    ) -> None:
        if count <= 0:
            return
        if rule in downgrade:
            severity = "warn"
        name = None if column is None else _name(column)
        self.failures.append(Failure(severity, name, rule, int(count), examples, message))

    def rows(
        self,
        rule_obj: ColumnRule | None,
        column: Any,
        rule: str,
        mask: np.ndarray,
        render: Callable[[np.ndarray], list[Any]],
        message: Callable[[int], str],
        severity: Severity = "error",
    ) -> None:
        """A failure over the rows where ``mask`` holds: counted whole, examples rendered
        for the first few only."""
        count = int(np.count_nonzero(mask))
        if not count:
            return
        warn = rule_obj.warn if rule_obj is not None else ()
        self.add(column, rule, count, _first_examples(mask, render), message(count), severity, warn)


def check(
    frame: pd.DataFrame,
    contract: Contract,
    time: TimeSpec | None = None,
    today: dt.date | dt.datetime | None = None,
) -> list[Failure]:
    """Evaluate the column, key and time rules of ``contract`` on the raw ``frame``; return
    every failure (the panel's completeness: :func:`check_completeness`).

    ``time`` (``params.problem.time``) says how each row's period is read: rows whose time
    is missing or not readable break rule ``time_readable``; the span rules
    (``time.not_before``, ``not_after``, ``no_future``) and ``time.agree`` apply to the
    others. ``today`` (default: now) places ``no_future``. Without ``time`` no time rule
    applies.
    """
    out = _Report()
    n = len(frame)
    if n < contract.min_rows:
        out.add(
            None,
            "min_rows",
            1,
            [n],
            f"the table has {n} rows; the contract requires at least {contract.min_rows}.",
        )
    for col in contract.columns:
        if col not in frame.columns:
            out.add(
                col,
                "required",
                1,
                [],
                f"column {show(col)} is required by the contract but absent; "
                f"{_found_columns(frame)}.",
            )
    extra = [c for c in frame.columns if c not in contract.columns]
    if extra:
        shown = [example(str(c)) for c in extra[:N_EXAMPLES]]
        more = f" and {len(extra) - N_EXAMPLES} more" if len(extra) > N_EXAMPLES else ""
        out.add(
            None,
            "extra_columns",
            len(extra),
            shown,
            f"column(s) {shown}{more} are not declared in the contract.",
            contract.extra_columns,
        )
    needed = set(contract.time.agree)  # float views kept for the agreement rule
    numeric_view: dict[str, pd.Series] = {}
    for col, rule in contract.columns.items():
        if col in frame.columns:
            values = _check_column(out, frame[col], col, rule, n)
            if values is not None and col in needed:
                numeric_view[col] = values
    _check_key(out, frame, contract.key)
    if time is not None:
        for col in time.columns:
            if col not in frame.columns and col not in contract.columns:  # else named above
                out.add(
                    col,
                    "required",
                    1,
                    [],
                    f"time column {show(col)} (problem.time in params.yaml) is absent; "
                    f"{_found_columns(frame)}.",
                )
        read = _read_time(out, frame, time)
        if read is not None:
            ok, index = read
            _check_time(out, ok, index, time, contract.time, today)
            _check_agree(out, frame, numeric_view, ok, index, time, contract)
    return out.failures


def _found_columns(frame: pd.DataFrame) -> str:
    """``found columns ['a', 'b'] and 3 more``: the first few columns of ``frame``."""
    found = [show(c) for c in list(frame.columns)[:12]]
    more = f" and {frame.shape[1] - 12} more" if frame.shape[1] > 12 else ""
    return f"found columns [{', '.join(found)}]{more}"


def _check_column(
    out: _Report, series: pd.Series, col: str, rule: ColumnRule, n: int
) -> pd.Series | None:
    """The rules of one column; returns its float view when it holds numbers."""
    q = show(col)
    nulls = series.isna().to_numpy(dtype=bool)
    n_null = int(nulls.sum())
    cells = _values_at(series)
    if n_null:
        if not rule.nullable:
            out.rows(
                rule, col, "not_null", nulls, cells,
                lambda k: f"column {q} must not be missing; {k} missing value(s).",
            )  # fmt: skip
        else:
            rate = n_null / max(n, 1)
            limit = rule.max_missing if rule.max_missing is not None else 1.0
            if rate > limit:
                out.rows(
                    rule, col, "max_missing", nulls, cells,
                    lambda k: f"column {q}: missing rate {rate:.1%} above the contract's "
                    f"limit {limit:.1%} ({k} of {n} rows).",
                )  # fmt: skip
            else:
                out.add(
                    col,
                    "missing",
                    n_null,
                    [],
                    f"column {q}: {n_null} missing value(s) ({rate:.1%}), within the limit "
                    f"{limit:.1%}; rows are kept and counted downstream.",
                    "warn",
                )
    values: pd.Series | None = None
    if rule.type in NUMERIC:
        values = _numeric_view(series)
        if values is None:
            out.rows(
                rule, col, "type", _not_numbers(series, nulls), cells,
                lambda k: f"column {q} must hold {rule.type}s; found {_found(series)}.",
            )  # fmt: skip
            return None
        _check_numbers(out, series, values.to_numpy(dtype=float), col, rule, cells)
    elif rule.type == "string":
        problem = _string_problem(series, nulls)
        if problem is not None:
            mask, found = problem
            out.rows(
                rule, col, "type", mask, cells,
                lambda k: f"column {q} must hold strings; found {found}.",
            )  # fmt: skip
            return None
        if rule.allowed is not None:
            unseen = ~nulls & ~series.isin(rule.allowed).to_numpy(dtype=bool)
            out.rows(
                rule, col, "allowed", unseen, cells,
                lambda k: f"column {q}: {k} value(s) not in the contract's "
                f"{len(set(rule.allowed))} allowed categories (an unseen segment).",
            )  # fmt: skip
    else:
        problem = _datetime_problem(series, nulls)
        if problem is not None:
            mask, found = problem
            out.rows(
                rule, col, "type", mask, cells,
                lambda k: f"column {q} must hold datetimes; found {found}.",
            )  # fmt: skip
            return None
    if not rule.allow_constant and n > 1 and n_null < n:
        if _constant(series, nulls, values):
            first = ~nulls & (np.cumsum(~nulls) == 1)
            out.rows(
                rule, col, "not_constant", first, cells,
                lambda k: f"column {q} is constant (a single distinct value): it carries no "
                "information; set allow_constant if this is expected.",
            )  # fmt: skip
    return values


def _constant(series: pd.Series, nulls: np.ndarray, values: pd.Series | None) -> bool:
    """Whether the present values are all equal (no hash table over the column)."""
    if values is not None:
        present = values.to_numpy(dtype=float)[~nulls]
        return bool(present.min() == present.max()) or bool(np.isnan(present).all())
    first = series.iloc[int(np.argmax(~nulls))]
    try:
        return bool(((series == first).to_numpy(dtype=bool) | nulls).all())
    except (TypeError, ValueError):  # cells that do not compare: not a constant column
        return False


def _check_numbers(
    out: _Report,
    series: pd.Series,
    values: np.ndarray,
    col: str,
    rule: ColumnRule,
    cells: Callable[[np.ndarray], list[Any]],
) -> None:
    """finite, max_abs, integer, min and max of a numeric column (min/max on finite values)."""
    q = show(col)
    finite = np.isfinite(values)
    if not rule.allow_infinite:
        out.rows(
            rule, col, "finite", np.isinf(values), cells,
            lambda k: f"column {q} must hold finite numbers; {k} infinite value(s) "
            "(inf/-inf); set allow_infinite if this is expected.",
        )  # fmt: skip
    if rule.max_abs is not None:
        with np.errstate(invalid="ignore"):
            huge = finite & (np.abs(values) > rule.max_abs)
        out.rows(
            rule, col, "max_abs", huge, cells,
            lambda k: f"column {q}: {k} value(s) beyond the magnitude guard |x| <= "
            f"{rule.max_abs:g} (max_abs; float64 holds integers exactly only up to 2^53 "
            "~ 9.0e15: no real count or amount gets there).",
        )  # fmt: skip
    if rule.type == "integer":
        with np.errstate(invalid="ignore"):
            fractional = finite & (np.mod(values, 1) != 0)
        out.rows(
            rule, col, "type", fractional, cells,
            lambda k: f"column {q} must hold integers; found {k} fractional value(s).",
        )  # fmt: skip
    if rule.min is not None:
        with np.errstate(invalid="ignore"):
            below = finite & (values < rule.min)
        out.rows(
            rule, col, "min", below, cells,
            lambda k: f"column {q}: {k} value(s) below the minimum {rule.min:g}.",
        )  # fmt: skip
    if rule.max is not None:
        with np.errstate(invalid="ignore"):
            above = finite & (values > rule.max)
        out.rows(
            rule, col, "max", above, cells,
            lambda k: f"column {q}: {k} value(s) above the maximum {rule.max:g}.",
        )  # fmt: skip


def _check_key(out: _Report, frame: pd.DataFrame, key: list[str]) -> None:
    """Unique key: rows sharing a key counted; the first few keys shown."""
    if not key or not all(k in frame.columns for k in key):
        return
    try:
        shared = frame.duplicated(subset=key, keep=False).to_numpy(dtype=bool)
    except TypeError:  # unhashable cells: the type rules already name them
        return
    if not shared.any():
        return
    first_of_shared = shared & ~frame.duplicated(subset=key, keep="first").to_numpy(dtype=bool)
    name = "+".join(key)

    def render(positions: np.ndarray) -> list[Any]:
        rows = frame.iloc[positions][key].to_numpy(dtype=object)
        return [
            shorten("|".join("<missing>" if _missing(v) else str(v) for v in row)) for row in rows
        ]

    n_keys = int(first_of_shared.sum())
    count = int(shared.sum())
    out.add(
        name,
        "unique_key",
        count,
        _first_examples(first_of_shared, render),
        f"key {shorten(name)} must be unique; {count} rows share {n_keys} key(s).",
    )


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def read_time(frame: pd.DataFrame, time: TimeSpec) -> tuple[np.ndarray, np.ndarray, list[Failure]]:
    """Rows of ``frame`` whose time is readable, their period index (0 elsewhere), and the
    failures: rule ``time_readable`` naming the time column(s) and a few raw values, or
    ``required`` for an absent time column (then no row is readable)."""
    out = _Report()
    absent = [c for c in time.columns if c not in frame.columns]
    for col in absent:
        out.add(
            col,
            "required",
            1,
            [],
            f"time column {show(col)} (problem.time in params.yaml) is absent; "
            f"{_found_columns(frame)}.",
        )
    read = None if absent else _read_time(out, frame, time)
    if read is None:
        n = len(frame)
        return np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64), out.failures
    return read[0], read[1], out.failures


def _read_time(
    out: _Report, frame: pd.DataFrame, time: TimeSpec
) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows with a readable time and their period index; unreadable rows are a failure
    (rule ``time_readable``). None when a time column is absent (named elsewhere)."""
    if any(c not in frame.columns for c in time.columns):
        return None
    where = "+".join(time.columns)
    ok, index = time_index(frame, time)
    if time.column is None:  # true/false are not years (the type rule names them too)
        for col in time.columns:
            if _booleans(frame[col]):
                ok = ok & frame[col].isna().to_numpy(dtype=bool)
    out.rows(
        None, where, TIME_READABLE, ~ok, _time_cells(frame, time),
        lambda k: _unreadable_text(frame, time, k),
    )  # fmt: skip
    return ok, index


def _booleans(series: pd.Series) -> bool:
    """Whether a column holds true/false values (not numbers)."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return True
    return pd.api.types.is_object_dtype(series.dtype) and (
        pd.api.types.infer_dtype(series, skipna=True) == "boolean"
    )


def _time_cells(frame: pd.DataFrame, time: TimeSpec) -> Callable[[np.ndarray], list[Any]]:
    """Renderer of the raw time of rows: the cell of a date column, ``year=2000, month=13``
    for year + period columns."""
    if time.column is not None:
        return _values_at(frame[time.column])
    columns = list(time.columns)

    def render(positions: np.ndarray) -> list[Any]:
        cells = frame.iloc[positions][columns].to_numpy(dtype=object)
        return _distinct(
            [
                ", ".join(f"{c}={show(v) if isinstance(v, str) else example(v)}" for c, v in
                          zip(columns, row, strict=True))
                for row in cells
            ]
        )  # fmt: skip

    return render


def _unreadable_text(frame: pd.DataFrame, time: TimeSpec, k: int) -> str:
    """What an unreadable time should have been, for the ``time_readable`` message."""
    cal = time.calendar
    if time.column is not None:
        if time.format is not None:
            how = f"dates in format {time.format!r}"
        else:
            how = "dates or datetimes"
            series = frame[time.column]
            if pd.api.types.is_numeric_dtype(series.dtype) and not _booleans(series):
                how += " (numbers are read as dates only with problem.time.format, e.g. '%Y%m%d')"
    else:
        how = "whole years 1..9999"
        if time.period_column is not None:
            per = PERIODS_PER_YEAR[cal.frequency]
            how += f" and {cal.unit}s 1..{per} of the year"
    return (
        f"time {time.describe()} must give every row its {cal.unit}; {k} row(s) are missing "
        f"or not readable as {how}."
    )


def _contract_period(cal: Calendar, value: str, key: str) -> int:
    """A period of the contract read in ``cal``; a contract read in another frequency is named."""
    try:
        return cal.parse(value)
    except ValueError:
        raise ContractError(
            f"'{key}' {value!r} is not a {cal.unit} {cal.form} (problem.time.frequency "
            f"{cal.frequency!r}): load the contract with the params' calendar "
            "(load_contract(path, calendar=params.problem.calendar))."
        ) from None


def _check_time(
    out: _Report,
    ok: np.ndarray,
    index: np.ndarray,
    time: TimeSpec,
    rule: TimeRule,
    today: dt.date | dt.datetime | None,
) -> None:
    """The span rules: not before, not after, not in the future (readable rows only)."""
    cal = time.calendar
    where = "+".join(time.columns)
    limits = []
    if rule.not_before:
        first = _contract_period(cal, rule.not_before, "time.not_before")
        limits.append(("not_before", index < first, f"before {rule.not_before}"))
    if rule.not_after:
        last = _contract_period(cal, rule.not_after, "time.not_after")
        limits.append(("not_after", index > last, f"after {rule.not_after}"))
    if rule.no_future:
        now = cal.current(today)
        limits.append(("no_future", index > now, f"in the future (after {cal.format(now)})"))

    def periods(positions: np.ndarray) -> list[Any]:
        return [cal.format(i) for i in pd.unique(index[positions])[:N_EXAMPLES]]

    for name, mask, text in limits:
        out.rows(
            None, where, name, ok & mask, periods,
            lambda k, text=text: f"time {where}: {k} row(s) dated {text}.",
        )  # fmt: skip


def _check_agree(
    out: _Report,
    frame: pd.DataFrame,
    numeric_view: dict[str, pd.Series],
    ok: np.ndarray,
    index: np.ndarray,
    time: TimeSpec,
    contract: Contract,
) -> None:
    """Redundant time columns (``time.agree``) must give the row's period."""
    cal = time.calendar
    where = "+".join(time.columns)
    for col, kind in contract.time.agree.items():
        if col not in frame.columns or col in time.columns:
            continue
        series = frame[col]
        if kind == "decimal_year":
            if time.period_column is None or cal.frequency not in DECIMAL_YEAR_FREQUENCIES:
                raise ContractError(
                    f"'time.agree.{_name(col)}' is 'decimal_year' (year + (period - 1) / "
                    "periods per year), which needs year + month or year + quarter columns; "
                    f"problem.time in params.yaml is {time.describe()}: use kind 'date' or "
                    "drop the rule."
                )
            if col not in numeric_view:
                continue  # the type rule names it
            per = PERIODS_PER_YEAR[cal.frequency]
            value = numeric_view[col].to_numpy(dtype=float)
            with np.errstate(invalid="ignore", over="ignore"):
                off = value * per
                off -= index
                bad = ok & np.isfinite(value) & ~(np.abs(off) <= DECIMAL_YEAR_TOLERANCE)
            ycol, pcol = time.year_column, time.period_column
            rule_text = (
                f"decimal_year: {col} = {ycol} + ({pcol} - 1) / {per}, to "
                f"{DECIMAL_YEAR_TOLERANCE:g} {cal.unit}"
            )
        else:
            parsed = _as_datetimes(series)
            if parsed is None:
                continue  # the type rule names it
            present = ~series.isna().to_numpy(dtype=bool)
            p_ok, p_index = cal.from_datetimes(parsed)
            bad = ok & present & ~(p_ok & (p_index == index))
            rule_text = f"date: the {cal.unit} of {col} is the row's {cal.unit}"

        def render(positions: np.ndarray, series: pd.Series = series) -> list[Any]:
            return [
                f"row {p}: {show(series.iloc[p])} for {cal.format(index[p])}"
                for p in positions[:N_EXAMPLES]
            ]

        rule = contract.columns[col]
        out.rows(
            rule, col, "agree", bad, render,
            lambda k, col=col, rule_text=rule_text: f"column {show(col)} must agree with "
            f"{where} ({rule_text}); {k} row(s) disagree or are not readable.",
        )  # fmt: skip


_OFFSET = r"(?:Z|[+-]\d{2}(?::?\d{2})?)\s*$"


def _as_datetimes(series: pd.Series) -> pd.Series | None:
    """A datetime column, or ISO date/datetime text parsed (unreadable: NaT); None otherwise.
    Times keep their wall clock (text with mixed UTC offsets too)."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return series
    kind = pd.api.types.infer_dtype(series, skipna=True)
    if kind in ("datetime", "datetime64", "date"):
        try:
            return pd.to_datetime(series, errors="coerce")
        except (ValueError, TypeError):  # mixed timezones: each in its own
            return pd.to_datetime(series, errors="coerce", utc=True)
    if kind in ("string", "empty"):
        text = series.astype(object)
        try:
            return pd.to_datetime(text, format="ISO8601", errors="coerce")
        except (ValueError, TypeError):  # mixed UTC offsets: read each at its wall clock
            valid = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True).notna()
            local = text.where(valid).str.replace(_OFFSET, "", regex=True)
            return pd.to_datetime(local, format="ISO8601", errors="coerce")
    return None


# --------------------------------------------------------------------------- completeness


def check_completeness(
    panel: pd.DataFrame,
    contract: Contract,
    segment_column: str,
    time: TimeSpec,
) -> list[Failure]:
    """The panel rules of ``contract.completeness`` on the prepared ``panel`` (its segment
    column ``segment_column``, its periods read from the ``time`` columns): expected
    segments present, the last period late enough, rows per period within bounds, no gap
    inside a segment's history (a warning by default, naming the segments and the missing
    periods). Rows whose time is not readable are left out (:func:`check` names them)."""
    rules = contract.completeness
    out = _Report()
    segment = segment_column
    where = "+".join(time.columns)
    cal = time.calendar
    if segment in panel.columns and rules.expected_segments is not None:
        _check_segments(out, panel[segment], segment, contract)
    if any(c not in panel.columns for c in time.columns):
        return out.failures  # missing time columns: check() names them
    ok, index = time_index(panel, time)
    periods = index[ok]
    if not len(periods):
        return out.failures
    first, last = int(periods.min()), int(periods.max())
    if rules.last_period_not_before is not None:
        expected = _contract_period(
            cal, rules.last_period_not_before, "completeness.last_period_not_before"
        )
        if last < expected:
            out.add(
                where,
                "last_period",
                1,
                [cal.format(last)],
                f"the last period of the table is {cal.format(last)}; the contract "
                f"expects data up to {rules.last_period_not_before} at least (a truncated "
                "or stale table).",
                downgrade=rules.warn,
            )
    if rules.rows_per_period is not None:
        _check_rows_per_period(out, periods, first, last, rules, where, cal)
    if rules.gaps != "ignore" and segment in panel.columns:
        _check_gaps(out, panel[segment], ok, index, segment, rules.gaps, cal)
    return out.failures


def _check_segments(out: _Report, series: pd.Series, segment: str, contract: Contract) -> None:
    expected = contract.completeness.expected_segments
    if expected == "allowed":
        rule = contract.columns.get(segment)
        if rule is None or rule.allowed is None:
            raise ContractError(
                f"'completeness.expected_segments' is 'allowed', but the segment column "
                f"{show(segment)} (problem.segment in params.yaml) has no allowed list in the "
                f"contract; give the list, or declare columns.{_name(segment)}.allowed."
            )
        expected = rule.allowed
    try:
        present = set(series.dropna().unique())
    except TypeError:
        return  # unhashable cells: the type rule names them
    missing = [s for s in dict.fromkeys(expected) if s not in present]
    out.add(
        segment,
        "expected_segments",
        len(missing),
        [example(s) for s in missing[:N_EXAMPLES]],
        f"{len(missing)} of {len(set(expected))} expected segment(s) of column {show(segment)} "
        "are absent (a truncated or partial table).",
        downgrade=contract.completeness.warn,
    )


def _check_rows_per_period(
    out: _Report,
    periods: np.ndarray,
    first: int,
    last: int,
    rules: Completeness,
    where: str,
    cal: Calendar,
) -> None:
    bounds = rules.rows_per_period
    assert bounds is not None
    counts = np.bincount(periods - first, minlength=last - first + 1)
    bad = np.zeros(len(counts), dtype=bool)
    if bounds.min is not None:
        bad |= counts < bounds.min
    if bounds.max is not None:
        bad |= counts > bounds.max
    median = float(np.median(counts))
    if bounds.min_share_of_median is not None:
        bad |= counts < bounds.min_share_of_median * median
    k = int(bad.sum())
    shown = [
        f"{cal.format(first + int(i))}: {int(counts[i])} rows"
        for i in np.flatnonzero(bad)[:N_EXAMPLES]
    ]
    out.add(
        where,
        "rows_per_period",
        k,
        shown,
        f"rows per period must be {bounds.describe()} (median {median:g}); {k} of "
        f"{len(counts)} period(s) from {cal.format(first)} to {cal.format(last)} "
        "are outside.",
        downgrade=rules.warn,
    )


def _check_gaps(
    out: _Report,
    series: pd.Series,
    ok: np.ndarray,
    index: np.ndarray,
    segment: str,
    level: Literal["error", "warn"],
    cal: Calendar,
) -> None:
    """Periods missing between a segment's first and last period, named per segment."""
    try:
        codes, names = pd.factorize(series, sort=True)
    except TypeError:
        return  # unhashable cells: the type rule names them
    keep = ok & (codes >= 0)
    seg, t = codes[keep].astype(np.int64), index[keep]
    if not len(t):
        return
    order = np.lexsort((t, seg))
    seg, t = seg[order], t[order]
    same = seg[1:] == seg[:-1]
    step = t[1:] - t[:-1]
    gap = same & (step > 1)
    if not gap.any():
        return
    g_seg = seg[1:][gap]
    g_start = t[:-1][gap] + 1
    g_end = t[1:][gap] - 1
    total = int((g_end - g_start + 1).sum())
    n_segments = int(len(np.unique(g_seg)))
    shown: list[str] = []
    for code in np.unique(g_seg)[:N_EXAMPLES]:
        rows = np.flatnonzero(g_seg == code)
        ranges = [range_text(int(g_start[i]), int(g_end[i]), cal) for i in rows[:3]]
        more = f", and {len(rows) - 3} more gap(s)" if len(rows) > 3 else ""
        missing = int((g_end[rows] - g_start[rows] + 1).sum())
        shown.append(
            f"{shorten(str(names[code]))}: {', '.join(ranges)}{more} ({missing} period(s) missing)"
            if len(rows) > 1
            else f"{shorten(str(names[code]))}: {ranges[0]}"
        )
    out.add(
        segment,
        "gaps",
        total,
        shown,
        f"{total} period(s) missing inside the history of {n_segments} segment(s) of column "
        f"{show(segment)} (between each segment's first and last period; prepare.fill_missing "
        "inserts them with missing values): "
        + "; ".join(shown[:3])
        + ("; ..." if n_segments > 3 else ""),
        level,
    )


def range_text(start: int, end: int, cal: Calendar) -> str:
    """``2005-01..2005-12 (12 months)`` or ``2005-03 (1 month)``, in the calendar's unit."""
    n = end - start + 1
    if n == 1:
        return f"{cal.format(start)} ({cal.count(1)})"
    return f"{cal.format(start)}..{cal.format(end)} ({cal.count(n)})"


# --------------------------------------------------------------------------- reports


def report(failures: list[Failure], file: str, contract_path: str, rows: int) -> dict:
    """The JSON report of a validation run (JSON-safe and bounded whatever the data)."""
    errors = [f for f in failures if f.severity == "error"]
    warns = [f for f in failures if f.severity == "warn"]
    return {
        "file": file,
        "contract": contract_path,
        "rows": rows,
        "passed": not errors,
        "errors": len(errors),
        "warnings": len(warns),
        "failures": [asdict(f) for f in failures],
    }


def format_failures(failures: list[Failure], file: str) -> str:
    """Human-readable summary, one line per failure."""
    lines = []
    for f in failures:
        where = f"column {f.column!r}" if f.column else "table"
        ex = f"; e.g. {f.examples}" if f.examples else ""
        lines.append(
            f"{f.severity.upper()} {file}: {where}, rule '{f.rule}', {f.count} "
            f"value(s){ex}: {f.message}"
        )
    return "\n".join(lines)


__all__ = [
    "COLUMN_RULES",
    "COMPLETENESS_RULES",
    "ColumnRule",
    "Completeness",
    "Contract",
    "Failure",
    "RowsPerPeriod",
    "TIME_READABLE",
    "TimeRule",
    "bounded_message",
    "check",
    "check_completeness",
    "example",
    "format_failures",
    "load_contract",
    "range_text",
    "read_time",
    "report",
    "shorten",
    "show",
]
