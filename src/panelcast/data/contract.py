"""The data contract: a declarative description of a usable table, checked all at once.

``contract.yaml`` lists the columns (type, nullability, ranges, allowed categories,
missing-rate limit, constancy), the key, the minimum number of rows, the time span
and what to do with extra columns. :func:`check` evaluates every rule and returns
every failure (column, rule, count, up to five offending values); nothing stops at
the first problem and nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, model_validator

from ..core.config import (
    Month,
    StrictModel,
    describe_validation_error,
    read_yaml_file,
    rule_error,
)
from ..core.errors import ContractError
from ..core.periods import current_period, format_period, parse_period, period_index

logger = logging.getLogger(__name__)

Severity = Literal["error", "warn"]
N_EXAMPLES = 5


#: The rules :func:`check` can raise for one column (``warn:`` may downgrade these only).
COLUMN_RULES = ("not_null", "max_missing", "type", "min", "max", "allowed", "not_constant")


class ColumnRule(StrictModel):
    """Rules for one column."""

    type: Literal["integer", "number", "string"]
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = Field(default=None, min_length=1)
    max_missing: float | None = Field(default=None, ge=0, le=1)
    allow_constant: bool = False
    warn: list[str] = Field(default_factory=list)

    def raisable_rules(self) -> list[str]:
        """The rules :func:`check` can raise for a column with these settings."""
        numeric = self.type in ("integer", "number")
        possible = {
            "not_null": not self.nullable,
            "max_missing": self.nullable,
            "type": True,
            "min": numeric and self.min is not None,
            "max": numeric and self.max is not None,
            "allowed": not numeric and self.allowed is not None,
            "not_constant": not self.allow_constant,
        }
        return [rule for rule in COLUMN_RULES if possible[rule]]

    @model_validator(mode="after")
    def _consistent(self) -> ColumnRule:
        numeric = self.type in ("integer", "number")
        for key in ("min", "max"):
            if getattr(self, key) is not None and not numeric:
                raise rule_error(
                    key,
                    f"applies to integer or number columns, not type {self.type!r}",
                    getattr(self, key),
                )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise rule_error("max", f"must be >= min {self.min:g}", self.max)
        if self.allowed is not None and numeric:
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
    not_before: Month | None = None
    not_after: Month | None = None
    no_future: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> TimeRule:
        if self.not_before and self.not_after:
            if parse_period(self.not_after) < parse_period(self.not_before):
                raise rule_error(
                    "not_after",
                    f"must not be before not_before {self.not_before}",
                    self.not_after,
                )
        return self


class Contract(StrictModel):
    """A whole data contract."""

    columns: dict[str, ColumnRule] = Field(min_length=1)
    key: list[str] = Field(min_length=1)
    min_rows: int = Field(ge=0)
    extra_columns: Severity
    time: TimeRule = Field(default_factory=TimeRule)

    @model_validator(mode="after")
    def _key_declared(self) -> Contract:
        for i, name in enumerate(self.key):
            if name not in self.columns:
                raise rule_error(
                    ("key", i),
                    f"must be a column declared under columns: {', '.join(self.columns)}",
                    name,
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


def load_contract(path: str | Path) -> Contract:
    """Read ``contract.yaml`` strictly: unknown keys, wrong types, duplicate keys and YAML
    anchors/aliases are errors (:class:`ContractError`) naming the file and the key."""
    data = read_yaml_file(path, "data contract", ContractError)
    try:
        return Contract.model_validate(data)
    except ValidationError as exc:
        raise ContractError(
            f"{path}: {describe_validation_error(exc, Contract, 'contract')}"
        ) from None


def _examples(values: pd.Series | np.ndarray | list) -> list[Any]:
    out = []
    for v in list(pd.unique(pd.Series(values)))[:N_EXAMPLES]:
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and v != v:
            v = None
        out.append(v)
    return out


def _add(
    failures: list[Failure],
    rule_obj: ColumnRule | None,
    column: str | None,
    rule: str,
    bad: pd.Series | list,
    message: str,
    severity: Severity = "error",
) -> None:
    count = len(bad)
    if count == 0:
        return
    if rule_obj is not None and rule in rule_obj.warn:
        severity = "warn"
    failures.append(Failure(severity, column, rule, count, _examples(bad), message))


def _as_numeric(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Numeric view of a column and the non-null values that are not numbers."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype(float), series.iloc[0:0]
    if pd.api.types.is_numeric_dtype(series):
        return series.astype(float), series.iloc[0:0]
    coerced = pd.to_numeric(series, errors="coerce")
    bad = series[series.notna() & coerced.isna()]
    if bad.empty:  # numbers stored as text: still the wrong type
        bad = series[series.notna()]
    return coerced.astype(float), bad


def check(
    frame: pd.DataFrame,
    contract: Contract,
    time_columns: tuple[str, str] | None = None,
    today: dt.date | None = None,
) -> list[Failure]:
    """Evaluate every rule of ``contract`` on ``frame``; return all failures."""
    failures: list[Failure] = []
    n = len(frame)
    if n < contract.min_rows:
        _add(
            failures,
            None,
            None,
            "min_rows",
            [n],
            f"the table has {n} rows; the contract requires at least {contract.min_rows}.",
        )
    missing_cols = [c for c in contract.columns if c not in frame.columns]
    for col in missing_cols:
        failures.append(
            Failure(
                "error",
                col,
                "required",
                1,
                [],
                f"column {col!r} is required by the contract but absent; "
                f"found columns {list(map(str, frame.columns))[:12]}.",
            )
        )
    extra = [str(c) for c in frame.columns if c not in contract.columns]
    if extra:
        failures.append(
            Failure(
                contract.extra_columns,
                None,
                "extra_columns",
                len(extra),
                extra[:N_EXAMPLES],
                f"column(s) {extra} are not declared in the contract.",
            )
        )
    numeric_view: dict[str, pd.Series] = {}
    for col, rule in contract.columns.items():
        if col not in frame.columns:
            continue
        series = frame[col]
        nulls = series.isna()
        n_null = int(nulls.sum())
        if n_null:
            if not rule.nullable:
                _add(
                    failures,
                    rule,
                    col,
                    "not_null",
                    series[nulls],
                    f"column {col!r} must not be missing; {n_null} missing value(s).",
                )
            else:
                rate = n_null / max(n, 1)
                limit = rule.max_missing if rule.max_missing is not None else 1.0
                if rate > limit:
                    _add(
                        failures,
                        rule,
                        col,
                        "max_missing",
                        series[nulls],
                        f"column {col!r}: missing rate {rate:.1%} above the contract's "
                        f"limit {limit:.1%} ({n_null} of {n} rows).",
                    )
                else:
                    failures.append(
                        Failure(
                            "warn",
                            col,
                            "missing",
                            n_null,
                            [],
                            f"column {col!r}: {n_null} missing value(s) ({rate:.1%}), "
                            f"within the limit {limit:.1%}; rows are kept and counted "
                            f"downstream.",
                        )
                    )
        present = series[~nulls]
        if rule.type in ("integer", "number"):
            values, not_numbers = _as_numeric(series)
            if len(not_numbers):
                _add(
                    failures,
                    rule,
                    col,
                    "type",
                    not_numbers,
                    f"column {col!r} must hold {rule.type}s; found dtype {series.dtype} "
                    f"(text, not numbers).",
                )
                continue
            if rule.type == "integer":
                finite = values[values.notna()]
                frac = finite[(finite % 1) != 0]
                _add(
                    failures,
                    rule,
                    col,
                    "type",
                    frac,
                    f"column {col!r} must hold integers; found fractional values.",
                )
            numeric_view[col] = values
            valid = values[values.notna()]
            if rule.min is not None:
                _add(
                    failures,
                    rule,
                    col,
                    "min",
                    valid[valid < rule.min],
                    f"column {col!r}: values below the minimum {rule.min:g}.",
                )
            if rule.max is not None:
                _add(
                    failures,
                    rule,
                    col,
                    "max",
                    valid[valid > rule.max],
                    f"column {col!r}: values above the maximum {rule.max:g}.",
                )
        else:
            if pd.api.types.is_numeric_dtype(series):
                _add(
                    failures,
                    rule,
                    col,
                    "type",
                    present,
                    f"column {col!r} must hold strings; found {series.dtype}.",
                )
                continue
            if rule.allowed is not None:
                allowed = set(rule.allowed)
                unseen = present[~present.astype(str).isin(allowed)]
                _add(
                    failures,
                    rule,
                    col,
                    "allowed",
                    unseen,
                    f"column {col!r}: value(s) not in the contract's {len(allowed)} allowed "
                    f"categories (an unseen segment).",
                )
        if not rule.allow_constant and n > 1 and present.nunique() <= 1:
            _add(
                failures,
                rule,
                col,
                "not_constant",
                present.iloc[:1],
                f"column {col!r} is constant (a single distinct value): it carries no "
                f"information; set allow_constant if this is expected.",
            )
    key = [k for k in contract.key if k in frame.columns]
    if key and len(key) == len(contract.key):
        dup = frame.duplicated(subset=key, keep=False)
        if dup.any():
            as_text = frame.loc[dup, key].apply(
                lambda col: col.map(lambda v: "<missing>" if pd.isna(v) else str(v))
            )
            keys = as_text.agg("|".join, axis=1)
            _add(
                failures,
                None,
                "+".join(key),
                "unique_key",
                keys,
                f"key {'+'.join(key)} must be unique; {int(dup.sum())} rows share a key.",
            )
    if time_columns and all(c in numeric_view for c in time_columns):
        _check_time(failures, numeric_view, time_columns, contract.time, today)
    return failures


def _check_time(
    failures: list[Failure],
    numeric_view: dict[str, pd.Series],
    time_columns: tuple[str, str],
    rule: TimeRule,
    today: dt.date | None,
) -> None:
    ycol, mcol = time_columns
    year, month = numeric_view[ycol], numeric_view[mcol]
    ok = year.notna() & month.notna() & month.between(1, 12)
    index = period_index(year[ok], month[ok]).astype(int)
    label = index.map(format_period)
    limits = []
    if rule.not_before:
        limits.append(
            (
                "not_before",
                index < parse_period(rule.not_before),
                f"before {rule.not_before}",
            )
        )
    if rule.not_after:
        limits.append(
            (
                "not_after",
                index > parse_period(rule.not_after),
                f"after {rule.not_after}",
            )
        )
    if rule.no_future:
        today = today or dt.date.today()
        limits.append(
            (
                "no_future",
                index > current_period(today),
                f"in the future (after {today:%Y-%m})",
            )
        )
    for name, mask, text in limits:
        _add(
            failures,
            None,
            f"{ycol}+{mcol}",
            name,
            label[mask],
            f"time {ycol}+{mcol}: {int(mask.sum())} row(s) dated {text}.",
        )


def report(failures: list[Failure], file: str, contract_path: str, rows: int) -> dict:
    """The JSON report of a validation run."""
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
