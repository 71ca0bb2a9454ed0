"""The column and period vocabulary: the one place that knows how time is counted.

A period is an integer index so that arithmetic on periods is integer arithmetic (the
period after ``t`` is ``t + 1``, a window of ``n`` periods is ``n`` integers). How the
index is counted depends on the frequency declared in params (``problem.time.frequency``),
held by a :class:`Calendar`:

========= ============================= ====================== ===============
frequency index                         text form              season (default)
========= ============================= ====================== ===============
``H``     hours since 1970-01-01 00:00  ``YYYY-MM-DD HH:00``   24 (a day)
``D``     days since 1970-01-01         ``YYYY-MM-DD``         7 (a week)
``W``     weeks (from Monday) since     ``YYYY-MM-DD``, the    52 (a year)
          the week of 1970-01-05        week's Monday
``M``     ``year * 12 + month - 1``     ``YYYY-MM``            12 (a year)
``Q``     ``year * 4 + quarter - 1``    ``YYYY-Qn``            4 (a year)
``Y``     ``year``                      ``YYYY``               1 (none)
========= ============================= ====================== ===============

The text form is what params, metrics and plots show; :meth:`Calendar.parse` also reads
a date (any day of the period; YAML turns ``2001-01-22`` into a date), and a bare year for
``Y``. The reserved column names of the feature table live here too.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

#: Reserved columns of the feature table (segment column aside, which params name).
PERIOD, T, WINDOW, TARGET, PREDICTION = "period", "t", "window", "target", "prediction"
#: Engineered feature names that other modules look up.
SEGMENT_FEATURE, LEVEL_FEATURE, SEASON_FEATURE = "segment", "log_level", "season_position"
#: The segment column of a table without one (``problem.segment`` absent): one series.
SINGLE_SERIES = "series"

#: The frequencies a calendar knows, their unit and default season length.
FREQUENCIES: dict[str, tuple[str, int]] = {
    "H": ("hour", 24),
    "D": ("day", 7),
    "W": ("week", 52),
    "M": ("month", 12),
    "Q": ("quarter", 4),
    "Y": ("year", 1),
}
#: Periods of each frequency in the period-of-year column (``year + period`` tables).
PERIODS_PER_YEAR = {"W": 53, "M": 12, "Q": 4}
_FORMS = {
    "H": "'YYYY-MM-DD HH:00'",
    "D": "'YYYY-MM-DD'",
    "W": "a date 'YYYY-MM-DD' (any day of the week)",
    "M": "'YYYY-MM'",
    "Q": "'YYYY-Qn'",
    "Y": "a year 'YYYY'",
}
_EPOCH = dt.date(1970, 1, 1)
_MONDAY = dt.date(1970, 1, 5)  # first Monday after the epoch: week 0
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_QUARTER = re.compile(r"^(\d{4})-?Q([1-4])$", re.IGNORECASE)
_YEAR = re.compile(r"^(\d{4})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_HOUR = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2})(?::(\d{2})(?::(\d{2}))?)?$")


@dataclass(frozen=True)
class Calendar:
    """How periods of one frequency are counted, parsed, shown and placed in a season."""

    frequency: str = "M"
    #: periods in one seasonal cycle; ``None``: the frequency's default
    season: int | None = None

    def __post_init__(self) -> None:
        if self.frequency not in FREQUENCIES:
            raise ValueError(
                f"unknown frequency {self.frequency!r}; expected one of {list(FREQUENCIES)}"
            )

    # ------------------------------------------------------------------ describing

    @property
    def unit(self) -> str:
        """The period's name: ``"month"``, ``"day"``..."""
        return FREQUENCIES[self.frequency][0]

    @property
    def season_length(self) -> int:
        """Periods in one seasonal cycle (the ``seasonal_naive`` lag)."""
        return self.season if self.season is not None else FREQUENCIES[self.frequency][1]

    @property
    def form(self) -> str:
        """The text form of a period, for messages."""
        return _FORMS[self.frequency]

    def count(self, n: int) -> str:
        """``"12 months"``, ``"1 day"``."""
        return f"{n} {self.unit}{'' if n == 1 else 's'}"

    # ------------------------------------------------------------------ text

    def parse(self, value: Any) -> int:
        """Period index of ``value`` (its text form, a date, or a year for ``Y``).

        Raises ``ValueError`` naming the value and the expected form.
        """
        f = self.frequency
        if isinstance(value, dt.date):  # a datetime too
            return self.of_timestamp(pd.Timestamp(value))
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"expected a {self.unit} {self.form}, got {value!r}")
        text = str(value).strip()
        if f == "Y" and _YEAR.match(text):
            return int(text)
        if f == "M" and (m := _MONTH.match(text)):
            year, month = int(m.group(1)), int(m.group(2))
            if not 1 <= month <= 12:
                raise ValueError(f"month {month} is outside 1..12 in {text!r}")
            return year * 12 + month - 1
        if f == "Q" and (m := _QUARTER.match(text)):
            return int(m.group(1)) * 4 + int(m.group(2)) - 1
        if f in ("D", "W", "M", "Q", "Y") and _DAY.match(text):
            try:
                return self.of_timestamp(pd.Timestamp(dt.date.fromisoformat(text)))
            except ValueError:
                raise ValueError(f"{text!r} is not a valid date") from None
        if f == "H" and (m := _HOUR.match(text)):
            try:
                stamp = dt.datetime(
                    int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4))
                )
            except ValueError:
                raise ValueError(f"{text!r} is not a valid date and hour") from None
            return self.of_timestamp(pd.Timestamp(stamp))
        raise ValueError(f"expected a {self.unit} {self.form}, got {text!r}")

    def format(self, index: int | np.integer) -> str:
        """Text form of a period index (inverse of :meth:`parse`)."""
        i = int(index)
        f = self.frequency
        if f == "M":
            return f"{i // 12:04d}-{i % 12 + 1:02d}"
        if f == "Q":
            return f"{i // 4:04d}-Q{i % 4 + 1}"
        if f == "Y":
            return f"{i:04d}"
        if f == "D":
            return (_EPOCH + dt.timedelta(days=i)).isoformat()
        if f == "W":
            return (_MONDAY + dt.timedelta(weeks=i)).isoformat()
        day, hour = divmod(i, 24)
        return f"{(_EPOCH + dt.timedelta(days=day)).isoformat()} {hour:02d}:00"

    def start(self, index: int | np.integer) -> pd.Timestamp:
        """The first instant of a period."""
        i = int(index)
        f = self.frequency
        if f == "M":
            return pd.Timestamp(i // 12, i % 12 + 1, 1)
        if f == "Q":
            return pd.Timestamp(i // 4, (i % 4) * 3 + 1, 1)
        if f == "Y":
            return pd.Timestamp(i, 1, 1)
        if f == "D":
            return pd.Timestamp(_EPOCH) + pd.Timedelta(days=i)
        if f == "W":
            return pd.Timestamp(_MONDAY) + pd.Timedelta(weeks=i)
        return pd.Timestamp(_EPOCH) + pd.Timedelta(hours=i)

    # ------------------------------------------------------------------ columns

    def of_timestamp(self, stamp: pd.Timestamp) -> int:
        """Period index of one timestamp."""
        ok, index = self.from_datetimes(pd.Series([stamp]))
        if not ok[0]:
            raise ValueError(f"{stamp!r} is not a readable time")
        return int(index[0])

    def from_datetimes(self, values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Rows with a time (``ok``) and their period index (0 where not ok).

        ``values`` is a datetime64 series (missing values are NaT); timezones are
        dropped (the wall-clock time is kept).
        """
        stamps = pd.Series(values)
        if isinstance(stamps.dtype, pd.DatetimeTZDtype):
            stamps = stamps.dt.tz_localize(None)
        ok = stamps.notna().to_numpy(dtype=bool)
        f = self.frequency
        filled = stamps.where(ok, pd.Timestamp(_EPOCH))
        if f in ("M", "Q", "Y"):
            year = filled.dt.year.to_numpy(dtype=np.int64)
            month = filled.dt.month.to_numpy(dtype=np.int64)
            index = {"M": year * 12 + month - 1, "Q": year * 4 + (month - 1) // 3, "Y": year}[f]
        else:
            days = (filled.dt.normalize() - pd.Timestamp(_EPOCH)).dt.days.to_numpy(dtype=np.int64)
            if f == "D":
                index = days
            elif f == "W":
                index = (days - (_MONDAY - _EPOCH).days) // 7
            else:
                index = days * 24 + filled.dt.hour.to_numpy(dtype=np.int64)
        index = np.where(ok, index, 0).astype(np.int64)
        return ok, index

    def from_parts(
        self, year: np.ndarray, period: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows with a usable year (and period of the year) and their period index.

        ``year`` and ``period`` are float arrays (missing: NaN). A usable row has whole
        numbers, a year within 1..9999 and a period within 1..periods per year (months
        1-12, quarters 1-4, ISO weeks 1-53). Index 0 where not usable.
        """
        f = self.frequency
        year = np.asarray(year, dtype=float)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(year) & (year >= 1) & (year <= 9999) & (np.floor(year) == year)
            if f != "Y":
                if period is None:
                    raise ValueError(f"frequency {f!r} needs a period-of-year column")
                period = np.asarray(period, dtype=float)
                ok &= np.isfinite(period) & (np.floor(period) == period) & (period >= 1)
                ok &= period <= PERIODS_PER_YEAR[f]
        y = np.where(ok, year, 1970).astype(np.int64)
        if f == "Y":
            index = y
        else:
            p = np.where(ok, period, 1).astype(np.int64)
            if f == "M":
                index = y * 12 + p - 1
            elif f == "Q":
                index = y * 4 + p - 1
            else:  # ISO year + ISO week: the week's Monday
                index = np.zeros(len(y), dtype=np.int64)
                for i in np.flatnonzero(ok):
                    try:
                        monday = dt.date.fromisocalendar(int(y[i]), int(p[i]), 1)
                    except ValueError:  # week 53 of a 52-week year
                        ok[i] = False
                        continue
                    index[i] = (monday - _MONDAY).days // 7
        return ok, np.where(ok, index, 0).astype(np.int64)

    # ------------------------------------------------------------------ seasons

    def season_of(self, t: pd.Series | np.ndarray) -> pd.Series | np.ndarray:
        """Position in the seasonal cycle, 0-based (0 = January for monthly data)."""
        return t % self.season_length

    def current(self, today: dt.date | dt.datetime | None = None) -> int:
        """The period that holds ``today`` (default: now)."""
        return self.of_timestamp(pd.Timestamp(today or dt.datetime.now()))


#: The calendar of the default case (monthly data, yearly season).
MONTHLY = Calendar("M")
