"""Shared pieces of the contract tests: a contract written from text, a small panel."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from panelcast.core.config import TimeSpec
from panelcast.core.periods import MONTHLY, Calendar
from panelcast.data.contract import Contract, load_contract

from ..conftest import make_panel

#: The time axis of the small panels and of the Texas table: year + month, monthly.
TIME = TimeSpec(frequency="M", year_column="year", period_column="month")


def write_contract(
    folder: Path,
    text: str,
    edit: Callable[[str], str] = lambda t: t,
    calendar: Calendar = MONTHLY,
) -> Contract:
    """``edit(text)`` written to ``folder/contract.yaml`` and loaded strictly (periods in
    ``calendar``)."""
    path = folder / "contract.yaml"
    path.write_text(edit(text))
    return load_contract(path, calendar=calendar)


def only(items: list) -> object:
    """The single element of ``items`` (the test fails on none or several)."""
    assert len(items) == 1, items
    return items[0]


@pytest.fixture
def panel():
    return make_panel()
