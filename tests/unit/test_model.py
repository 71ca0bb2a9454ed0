"""Model factory, time-ordered folds, and safe byte-stable persistence."""

import io
import json
import logging
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV
from threadpoolctl import threadpool_limits

from panelcast.core.config import WindowSpec
from panelcast.core.errors import ParamsError
from panelcast.core.periods import LEVEL_FEATURE, MONTHLY, TARGET, Calendar, T
from panelcast.core.progress import Progress
from panelcast.modelling.features import build_features, feature_columns
from panelcast.modelling.model import (
    LevelRatioRegressor,
    UntrustedModelError,
    dumps_model,
    fit_model,
    loads_model,
    make_estimator,
    model_card,
    time_folds,
    with_unit,
)

from ..conftest import ROOT, make_panel

WINDOWS = WindowSpec("2001-01", "2004-12", "2005-01", "2005-12")


@pytest.fixture
def data(params):
    frame, _ = build_features(make_panel(years=6), params.problem, params.features, WINDOWS)
    train = frame[(frame.window == "train") & frame[TARGET].notna()].reset_index(drop=True)
    cols = feature_columns(frame, params.problem)
    return train, cols


def small_spec(params, **search):
    spec = params.train.model_copy(
        update={"hyperparameters": {"max_iter": 20, "learning_rate": 0.1}}
    )
    if not search:
        return spec
    return spec.model_copy(update={"search": spec.search.model_copy(update=search)})


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


@pytest.mark.parametrize(
    "calendar, first, length, span",
    [
        (MONTHLY, 2000 * 12, "6 months", "2000-01..2000-10"),
        (Calendar("Q"), 2000 * 4, "6 quarters", "2000-Q1..2002-Q2"),
        (Calendar("Y"), 2000, "6 years", "2000..2009"),
    ],
)
def test_time_folds_that_do_not_fit_name_the_periods_of_the_calendar(calendar, first, length, span):
    with pytest.raises(ParamsError) as info:
        time_folds(np.arange(first, first + 10), 3, 6, calendar)
    message = str(info.value)
    assert "'train.search.folds/fold_periods'" in message
    assert f"3 folds of {length} do not fit in the training window ({span})" in message
    assert "\n" not in message


def test_figures_of_the_target_name_the_unit():
    assert with_unit(38.6649, "homes") == "38.66 homes"
    assert with_unit(38.6649, None) == "38.66"
    assert with_unit(0.5, "t", digits=3) == "0.500 t"
    assert with_unit(None, "homes") == "-"


def test_unknown_estimator(params):
    with pytest.raises(ParamsError, match="unknown estimator 'XGBoost'"):
        make_estimator(params.train.model_copy(update={"estimator": "XGBoost"}), [], [])


def test_unknown_hyperparameter(params):
    spec = params.train.model_copy(update={"hyperparameters": {"n_trees": 10}})
    with pytest.raises(ParamsError, match=r"does not accept \['n_trees'\]"):
        make_estimator(spec, [], [])


def test_fit_search_and_predict(params, data):
    train, cols = data
    spec = small_spec(
        params, enabled=True, folds=2, fold_periods=6, space={"learning_rate": [0.05, 0.2]}
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


def test_few_segments_stay_categorical(params, data):
    """At most 255 segments with encoding auto: the segment stays a category of
    HistGradientBoosting, the encoder passes the frame through, and the report says so
    while ``best_params`` hold the estimator's hyperparameters only."""
    train, cols = data
    spec = small_spec(
        params, enabled=True, folds=2, fold_periods=6, space={"learning_rate": [0.05, 0.2]}
    )
    assert spec.segment_encoding == "auto"
    X = train[cols]
    model, report = fit_model(X, train[TARGET], train[T].to_numpy(), spec, "log_ratio", "log_level")
    assert report["segment_encoding"] == "native" and report["segment_levels"] == 3
    assert set(report["search"]["best_params"]) == {"learning_rate"}
    assert all("segment_encoding" not in c for c in report["search"]["candidates"])
    pipe = model.regressor_
    assert list(pipe.named_steps) == ["segment", "estimator"]
    assert pipe.named_steps["segment"].transform(X) is X
    assert pipe.named_steps["estimator"].is_categorical_[cols.index("segment")]
    assert model_card(model)["segment_encoding"] == "native"


SPACE = {"learning_rate": [0.05, 0.2], "max_leaf_nodes": [7, 15], "min_samples_leaf": [5, 20]}


@pytest.mark.parametrize("method", ["grid", "random"])
def test_search_matches_scikit_learn(params, data, method):
    """Same candidates, scores, ranks, choice and final model as GridSearchCV /
    RandomizedSearchCV with the MAE on the same time-ordered folds."""
    train, cols = data
    X, y, t = train[cols], train[TARGET], train[T].to_numpy()
    spec = small_spec(params, enabled=True, method=method, n_iter=5, folds=3, fold_periods=6)
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"space": SPACE})})
    model, report = fit_model(X, y, t, spec, "log_ratio", LEVEL_FEATURE)

    categorical = [c for c in cols if isinstance(X[c].dtype, pd.CategoricalDtype)]
    numeric = [c for c in cols if c not in categorical]
    base = LevelRatioRegressor(make_estimator(spec, categorical, numeric), LEVEL_FEATURE)
    grid = {f"regressor__estimator__{k}": v for k, v in SPACE.items()}
    common = dict(cv=time_folds(t, 3, 6), scoring="neg_mean_absolute_error", refit=True)
    if method == "grid":
        ref = GridSearchCV(base, grid, **common)
    else:
        ref = RandomizedSearchCV(base, grid, n_iter=5, random_state=spec.seed, **common)
    with threadpool_limits(limits=1):  # fit_model pins its fits to threads=1
        ref.fit(X, y)
    res = ref.cv_results_
    got = report["search"]["candidates"]
    assert len(got) == len(res["params"]) == (8 if method == "grid" else 5)
    for i, cand in enumerate(got):
        assert cand["params"] == {k.split("__")[-1]: v for k, v in res["params"][i].items()}
        assert cand["cv_mae"] == -res["mean_test_score"][i]  # exactly, not approximately
        assert cand["cv_mae_std"] == res["std_test_score"][i]
        assert cand["rank"] == res["rank_test_score"][i]
    assert report["search"]["best_cv_mae"] == -ref.best_score_
    assert report["search"]["best_params"] == {
        k.split("__")[-1]: v for k, v in ref.best_params_.items()
    }
    assert dumps_model(model) == dumps_model(ref.best_estimator_)


def test_search_in_processes_gives_the_same_model(params, data, caplog):
    train, cols = data
    args = (train[cols], train[TARGET], train[T].to_numpy())
    spec = small_spec(
        params, enabled=True, folds=2, fold_periods=6, space={"learning_rate": [0.05, 0.2]}
    )
    alone, report = fit_model(*args, spec, "log_ratio", LEVEL_FEATURE)
    spec2 = spec.model_copy(update={"search": spec.search.model_copy(update={"n_jobs": 2})})
    with caplog.at_level(logging.INFO, logger="panelcast.modelling.model"):
        shared, report2 = fit_model(*args, spec2, "log_ratio", LEVEL_FEATURE, threads=1)
    assert report2 == report
    assert dumps_model(shared) == dumps_model(alone)
    assert re.search(r"search: 4/4 fits done in \d+ s$", caplog.messages[-1])


def test_progress_says_how_far_and_how_long(caplog):
    progress = Progress("search", 4, "fits", every=3600)
    with caplog.at_level(logging.INFO, logger="panelcast.core.progress"):
        progress.update(1)  # not due: logged at most every `every` seconds
        progress.every = 0
        progress.update(2, "detail")
        progress.update(4)
    assert len(caplog.messages) == 2
    assert re.fullmatch(
        r"search: 2/4 fits done in \d+ s, about \d+ s left \(detail\)", caplog.messages[0]
    )
    assert re.fullmatch(r"search: 4/4 fits done in \d+ s", caplog.messages[1])


@pytest.mark.parametrize(
    "estimator",
    ["HistGradientBoostingRegressor", "Ridge", "RandomForestRegressor", "ExtraTreesRegressor"],
)
def test_skops_bytes_are_identical_across_fits(params, data, estimator):
    train, cols = data
    hyper = {"HistGradientBoostingRegressor": {"max_iter": 20}, "Ridge": {"alpha": 1.0}}.get(
        estimator, {"n_estimators": 5}
    )
    spec = params.train.model_copy(
        update={
            "estimator": estimator,
            "hyperparameters": hyper,
            "search": params.train.search.model_copy(update={"enabled": False}),
        }
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


#: Fits a small model in a child process restricted to the cores in argv[1], with thread
#: pools pinned as the stage runner pins them, and writes its bytes to argv[3].
AFFINITY_CHILD = """
import json, os, sys
os.sched_setaffinity(0, set(json.loads(sys.argv[1])))  # before numpy/sklearn load OpenMP
import numpy as np, pandas as pd
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
from threadpoolctl import threadpool_info, threadpool_limits
from panelcast.core.config import load_params
from panelcast.modelling.model import dumps_model, fit_model

params = load_params(sys.argv[2])
rng = np.random.default_rng(0)
n = 5000
X = pd.DataFrame(rng.normal(size=(n, 12)), columns=[f"x{i}" for i in range(12)])
X["segment"] = pd.Categorical(rng.choice(list("abcdefgh"), n))
X["log_level"] = rng.normal(5, 1, n)
y = np.expm1(X["log_level"] + 0.3 * X["x0"] + np.sin(X["x1"]) + rng.normal(0, 0.1, n))
search = params.train.search.model_copy(update={"enabled": False})
spec = params.train.model_copy(update={"hyperparameters": {"max_iter": 40}, "search": search})
info = {"cores": len(os.sched_getaffinity(0)), "unpinned": _openmp_effective_n_threads()}
with threadpool_limits(limits=params.compute.threads):  # as core.stage.run_stage does
    info["pinned"] = _openmp_effective_n_threads()  # what HistGradientBoosting uses
    info["openmp"] = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]
    model, _ = fit_model(
        X, y, np.arange(n), spec, "log_ratio", "log_level", threads=params.compute.threads
    )
with open(sys.argv[3], "wb") as f:
    f.write(dumps_model(model))
print(json.dumps(info))
"""


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs CPU affinity and at least 2 cores",
)
def test_model_bytes_do_not_depend_on_the_core_count(params, tmp_path):
    """Fitted on 1 core and on 2, with thread pools pinned like the runner: same bytes.

    Unpinned, HistGradientBoosting runs one OpenMP thread per core and its parallel sums
    change with the thread count (different bytes on 2 cores); ``threadpool_limits``
    brings the threads it uses to ``compute.threads`` (checked below)."""
    assert params.compute.threads == 1
    cores = sorted(os.sched_getaffinity(0))[:2]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT / "src")
    blobs, infos = [], []
    for use in (cores[:1], cores):
        out = tmp_path / f"model_{len(use)}.skops"
        proc = subprocess.run(
            [sys.executable, "-c", AFFINITY_CHILD, json.dumps(use), str(ROOT / "params.yaml"), out],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        infos.append(json.loads(proc.stdout))
        blobs.append(out.read_bytes())
    one, two = infos
    assert (one["cores"], two["cores"]) == (1, 2)
    assert two["unpinned"] == 2, f"OpenMP would not use both cores unpinned: {two}"
    assert one["pinned"] == two["pinned"] == 1 and set(one["openmp"] + two["openmp"]) == {1}
    assert blobs[0] == blobs[1]
