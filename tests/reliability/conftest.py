"""Fixtures shared by the reliability tests: one good repository per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import good_repo, state


@pytest.fixture(scope="module")
def good(prepared_repo, no_search_repo, tmp_path_factory) -> Path:
    """A copy of the project after a good `dvc repro`, committed: the last good state."""
    return good_repo(tmp_path_factory, prepared_repo)


@pytest.fixture(scope="module")
def good_state(good) -> dict[str, str]:
    """Hashes of every output, metric, plot, the lock and the params of the good repo."""
    return state(good)
