"""The column and period vocabulary: the one place that knows how time is counted.

A period is an integer index (``year * 12 + month - 1`` for monthly data) so that
arithmetic on periods is integer arithmetic; ``"YYYY-MM"`` is its text form in params,
metrics and plots. The reserved column names of the feature table live here too.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd

#: Reserved columns of the feature table (segment column aside, which params name).
PERIOD, T, WINDOW, TARGET, PREDICTION = "period", "t", "window", "target", "prediction"
#: Engineered feature names that other modules look up.
SEGMENT_FEATURE, LEVEL_FEATURE, SEASON_FEATURE = "segment", "log_level", "month_of_year"
#: Periods in one seasonal cycle (months in a year).
SEASON_LENGTH = 12

_PERIOD_TEXT = re.compile(r"^(\d{4})-(\d{2})$")


def parse_period(text: str) -> int:
    """Turn ``"YYYY-MM"`` into a period index; ``ValueError`` names the text on failure."""
    match = _PERIOD_TEXT.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"expected a month 'YYYY-MM', got {text!r}")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        raise ValueError(f"month {month} is outside 1..12 in {text!r}")
    return year * SEASON_LENGTH + month - 1


def format_period(index: int) -> str:
    """Inverse of :func:`parse_period`."""
    index = int(index)
    return f"{index // SEASON_LENGTH:04d}-{index % SEASON_LENGTH + 1:02d}"


def period_index(year: pd.Series | np.ndarray, month: pd.Series | np.ndarray) -> pd.Series:
    """Period index of year and month values (numbers; missing stays missing)."""
    return pd.Series(year) * SEASON_LENGTH + pd.Series(month) - 1


def season_of(t: pd.Series | np.ndarray) -> pd.Series | np.ndarray:
    """Position in the seasonal cycle, 0-based (0 = January for monthly data)."""
    return t % SEASON_LENGTH


def current_period(today: dt.date | None = None) -> int:
    """The period that holds ``today`` (default: the date the code runs)."""
    today = today or dt.date.today()
    return today.year * SEASON_LENGTH + today.month - 1
