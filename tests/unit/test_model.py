"""Model factory, time-ordered folds, and safe byte-stable persistence."""

import io
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import skops.io as sio

from panelcast.core.config import WindowSpec
from panelcast.core.errors import ParamsError
from panelcast.core.periods import LEVEL_FEATURE, TARGET, T
from panelcast.modelling.features import build_features, feature_columns
from panelcast.modelling.model import (
    UntrustedModelError,
    dumps_model,
    fit_model,
    loads_model,
    make_estimator,
    time_folds,
)

from ..conftest import make_panel

WINDOWS = WindowSpec("2001-01", "2004-12", "2005-01", "2005-12")


@pytest.fixture
def data(params):
    frame, _ = build_features(make_panel(years=6), params.problem, params.features, WINDOWS)
    train = frame[(frame.window == "train") & frame[TARGET].notna()].reset_index(drop=True)
    cols = feature_columns(frame, params.problem)
    return train, cols


def small_spec(params, **search):
    spec = replace(params.train, hyperparameters={"max_iter": 20, "learning_rate": 0.1})
    return replace(spec, search=replace(spec.search, **search)) if search else spec


def test_time_folds_never_look_back():
    t = np.repeat(np.arange(60), 3)
    folds = time_folds(t, 3, 6)
    assert len(folds) == 3
    for train, val in folds:
        assert t[train].max() < t[val].min()
        assert len(np.unique(t[val])) == 6
    assert t[folds[-1][1]].max() == 59


def test_time_folds_that_do_not_fit():
    with pytest.raises(ParamsError, match="do not fit"):
        time_folds(np.arange(10), 3, 6)


def test_unknown_estimator(params):
    with pytest.raises(ParamsError, match="unknown estimator 'XGBoost'"):
        make_estimator(replace(params.train, estimator="XGBoost"), [], [])


def test_unknown_hyperparameter(params):
    spec = replace(params.train, hyperparameters={"n_trees": 10})
    with pytest.raises(ParamsError, match=r"does not accept \['n_trees'\]"):
        make_estimator(spec, [], [])


def test_fit_search_and_predict(params, data):
    train, cols = data
    spec = small_spec(
        params, enabled=True, folds=2, fold_months=6, space={"learning_rate": [0.05, 0.2]}
    )
    model, report = fit_model(
        train[cols], train[TARGET], train[T].to_numpy(), spec, "log_ratio", LEVEL_FEATURE
    )
    assert len(report["search"]["candidates"]) == 2
    assert report["search"]["best_params"]["learning_rate"] in (0.05, 0.2)
    pred = model.predict(train[cols])
    assert (pred >= 0).all()
    assert np.abs(pred - train[TARGET]).mean() < 0.2 * train[TARGET].mean()
    with pytest.raises(ValueError, match="order must match"):
        model.predict(train[cols[::-1]])


@pytest.mark.parametrize(
    "estimator",
    ["HistGradientBoostingRegressor", "Ridge", "RandomForestRegressor", "ExtraTreesRegressor"],
)
def test_skops_bytes_are_identical_across_fits(params, data, estimator):
    train, cols = data
    hyper = {"HistGradientBoostingRegressor": {"max_iter": 20}, "Ridge": {"alpha": 1.0}}.get(
        estimator, {"n_estimators": 5}
    )
    spec = replace(
        params.train,
        estimator=estimator,
        hyperparameters=hyper,
        search=replace(params.train.search, enabled=False),
    )
    blobs = []
    for _ in range(2):
        model, _ = fit_model(
            train[cols], train[TARGET], train[T].to_numpy(), spec, "log_ratio", LEVEL_FEATURE
        )
        blobs.append(dumps_model(model))
    assert blobs[0] == blobs[1]
    loaded = loads_model(blobs[0])
    np.testing.assert_array_equal(loaded.predict(train[cols]), model.predict(train[cols]))


def test_untrusted_type_is_refused():
    import os

    from sklearn.preprocessing import FunctionTransformer

    blob = sio.dumps(FunctionTransformer(func=os.system))  # a model that would run a command
    with pytest.raises(UntrustedModelError, match=r"outside the trusted list.*system"):
        loads_model(blob, "models/model.skops")


def test_truncated_and_tampered_files_are_refused(params, data):
    train, cols = data
    spec = small_spec(params, enabled=False)
    model, _ = fit_model(
        train[cols], train[TARGET], train[T].to_numpy(), spec, "log_ratio", LEVEL_FEATURE
    )
    blob = dumps_model(model)
    with pytest.raises(ValueError, match="not a readable skops model file"):
        loads_model(blob[: len(blob) // 2], "models/model.skops")
    src = zipfile.ZipFile(io.BytesIO(blob))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data_ = src.read(info.filename)
            if info.filename == "schema.json":
                data_ = data_.replace(b"LevelRatioRegressor", b"LevelRatioRegressoX")
            dst.writestr(info, data_)
    with pytest.raises(ValueError, match="models/model.skops"):
        loads_model(out.getvalue(), "models/model.skops")
