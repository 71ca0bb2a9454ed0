"""Shared pieces of the contract tests: a contract written from text, a small panel."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from panelcast.data.contract import Contract, load_contract

from ..conftest import make_panel


def write_contract(folder: Path, text: str, edit: Callable[[str], str] = lambda t: t) -> Contract:
    """``edit(text)`` written to ``folder/contract.yaml`` and loaded strictly."""
    path = folder / "contract.yaml"
    path.write_text(edit(text))
    return load_contract(path)


def only(items: list) -> object:
    """The single element of ``items`` (the test fails on none or several)."""
    assert len(items) == 1, items
    return items[0]


@pytest.fixture
def panel():
    return make_panel()
