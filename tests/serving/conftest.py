"""Deployed bundles for the serving tests, built from the real data once per session."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_limits

from .bundle import MIXED, build_bundle, daily_case, quarterly_case, serving


def _build(tmp_path_factory, name: str, updates: dict | None = None):
    dest = tmp_path_factory.mktemp(name)
    with threadpool_limits(limits=1):
        params_file, params, table = build_bundle(dest, updates)
    return {"dir": dest, "params_file": params_file, "params": params, "table": table}


@pytest.fixture(autouse=True)
def one_thread():
    """As in the service: one OpenMP thread (two make scikit-learn slow on 2 busy cores)."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    """A deployed model (60 boosting rounds, no search) on the real default data."""
    return _build(tmp_path_factory, "bundle")


@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory):
    """Another model on the same data (40 rounds): another version, same schema."""
    return _build(tmp_path_factory, "other", {"train.hyperparameters.max_iter": 40})


@pytest.fixture(scope="session")
def mixed_bundle(tmp_path_factory):
    """The same data and global model, with each segment's own model where it scored
    better (``best_of`` among seasonal_naive, theta and sklearn): several families."""
    return _build(tmp_path_factory, "mixed", MIXED)


@pytest.fixture(scope="session")
def forecaster(bundle):
    from panelcast.serving.forecaster import Forecaster

    fc = Forecaster.load(bundle["params"])
    fc.warm_up()
    return fc


@pytest.fixture(scope="module")
def server(bundle):
    """``panelcast serve`` on the bundle, two workers, for the module."""
    yield from serving(bundle["params_file"], workers=2)


def _build_case(tmp_path_factory, name: str, case: dict):
    dest = tmp_path_factory.mktemp(name)
    with threadpool_limits(limits=1):
        params_file, params, table = build_bundle(
            dest, case["updates"], table=case["table"], contract=case["contract"]
        )
    return {"dir": dest, "params_file": params_file, "params": params, "table": table}


@pytest.fixture(scope="session")
def daily_bundle(tmp_path_factory):
    """A single daily series with a date column written ``%d/%m/%Y`` (no segment column)."""
    return _build_case(tmp_path_factory, "daily", daily_case("D"))


@pytest.fixture(scope="session")
def weekly_bundle(tmp_path_factory):
    """A single weekly series whose contract declares the date column ``datetime``."""
    return _build_case(tmp_path_factory, "weekly", daily_case("W", contract_type="datetime"))


@pytest.fixture(scope="session")
def quarterly_bundle(tmp_path_factory):
    """Five regions, quarterly, in year + quarter columns."""
    return _build_case(tmp_path_factory, "quarterly", quarterly_case())
