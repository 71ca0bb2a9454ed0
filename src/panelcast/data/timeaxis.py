"""The time axis of a table: its time columns (``problem.time``) read as period indices.

Every place that reads time from a table (the contract, ``prepare``, the features, the
service) goes through :func:`time_index`, so a date column and year + period columns are
read the same way everywhere, and an unreadable time is never silently skipped: the
caller gets the rows that could not be read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.config import TimeSpec
from ..core.periods import Calendar

__all__ = ["parse_datetimes", "time_columns_of", "time_index"]


def parse_datetimes(series: pd.Series, fmt: str | None) -> pd.Series:
    """``series`` as datetimes (NaT where missing or not readable).

    Text is parsed with ``fmt`` (strftime codes) when given, else with the format pandas
    infers; whole numbers (``19580329``) are read as text with ``fmt``. Timezones are
    dropped, keeping the wall-clock time. A column pandas cannot read as a whole (text
    with mixed UTC offsets, for example) is all NaT: it never raises, so every reader of
    time reports unreadable rows the same way (the contract's ``time_readable``).
    """
    try:
        return _parse_datetimes(series, fmt)
    except (ValueError, TypeError, OverflowError):
        return pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns]")


def _parse_datetimes(series: pd.Series, fmt: str | None) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_localize(None)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return series.astype("datetime64[ns]")
    values = series
    if pd.api.types.is_bool_dtype(series.dtype):
        return pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns]")
    if pd.api.types.is_numeric_dtype(series.dtype):
        if fmt is None:  # a bare number is not a date unless a format says how
            return pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns]")
        numbers = pd.to_numeric(series, errors="coerce")
        whole = numbers.notna() & (numbers == numbers.round())
        values = numbers.where(whole).astype("Int64").astype("string")
    else:
        values = series.astype("string")
    parsed = pd.to_datetime(values, format=fmt, errors="coerce")
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_localize(None)
    return parsed.astype("datetime64[ns]")


def time_index(frame: pd.DataFrame, time: TimeSpec) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose time is readable (``ok``) and their period index (0 where not ok).

    ``frame`` must hold the columns of ``time.columns`` (callers check and name them).
    """
    cal = time.calendar
    if time.column is not None:
        return cal.from_datetimes(parse_datetimes(frame[time.column], time.format))
    year = pd.to_numeric(frame[time.year_column], errors="coerce").to_numpy(
        dtype=float, na_value=np.nan
    )
    period = None
    if time.period_column is not None:
        period = pd.to_numeric(frame[time.period_column], errors="coerce").to_numpy(
            dtype=float, na_value=np.nan
        )
    return cal.from_parts(year, period)


def time_columns_of(index: np.ndarray, time: TimeSpec) -> dict[str, np.ndarray | pd.Series]:
    """The time columns of ``time`` for period indices: the period's first instant for a
    date column; the year (and month, quarter or ISO week) otherwise."""
    cal: Calendar = time.calendar
    index = np.asarray(index, dtype=np.int64)
    if time.column is not None:
        starts = pd.to_datetime([cal.start(i) for i in index]).to_numpy(dtype="datetime64[ns]")
        return {time.column: starts}
    f = time.frequency
    if f == "Y":
        return {time.year_column: index.copy()}
    if f in ("M", "Q"):
        per = 12 if f == "M" else 4
        return {time.year_column: index // per, time.period_column: index % per + 1}
    starts = [cal.start(i).isocalendar() for i in index]
    return {
        time.year_column: np.array([s[0] for s in starts], dtype=np.int64),
        time.period_column: np.array([s[1] for s in starts], dtype=np.int64),
    }
