"""The segment encoder: the global model at any number of segments (``train.segment_encoding``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from panelcast.core.errors import ParamsError
from panelcast.modelling.model import (
    SMOOTHING,
    LevelRatioRegressor,
    SegmentEncoder,
    dumps_model,
    fit_model,
    loads_model,
    make_estimator,
    model_card,
    segment_levels,
    time_folds,
)

LEVEL = "log_level"
PERIODS = 24


def frame(segments: int, periods: int = PERIODS, seed: int = 0) -> tuple:
    """A small feature frame: ``segments`` segments x ``periods`` periods, a categorical
    ``segment`` column (every segment a category), ``log_level``, three numeric columns;
    the target has a per-segment effect on top of the level."""
    rng = np.random.default_rng(seed)
    names = [f"s{i:04d}" for i in range(segments)]
    seg = np.repeat(np.arange(segments), periods)
    n = segments * periods
    X = pd.DataFrame(
        {
            "lag_1": rng.normal(size=n),
            "roll_3": rng.normal(size=n),
            LEVEL: rng.normal(4.0, 1.0, n),
            "season_position": np.tile(np.arange(periods) % 12, segments).astype(float),
        }
    )
    X["segment"] = pd.Categorical(np.array(names)[seg], categories=names)
    effect = rng.normal(0.0, 0.4, segments)
    z = effect[seg] + 0.2 * X["lag_1"].to_numpy() + rng.normal(0.0, 0.05, n)
    y = pd.Series(np.expm1(X[LEVEL].to_numpy() + z))
    t = np.tile(np.arange(periods), segments)
    return X, y, t


def spec_of(params, estimator="HistGradientBoostingRegressor", encoding="auto", search=False):
    hyper = {"HistGradientBoostingRegressor": {"max_iter": 20}, "Ridge": {"alpha": 1.0}}.get(
        estimator, {"n_estimators": 5}
    )
    space = {"learning_rate": [0.05, 0.2]} if estimator == "HistGradientBoostingRegressor" else {}
    s = params.train.search.model_copy(
        update={"enabled": search, "method": "grid", "folds": 2, "fold_periods": 4, "space": space}
    )
    return params.train.model_copy(
        update={
            "estimator": estimator,
            "hyperparameters": hyper,
            "segment_encoding": encoding,
            "search": s,
        }
    )


def encoder_of(model) -> SegmentEncoder:
    return model.regressor_.named_steps["segment"]


@pytest.fixture(scope="module")
def wide():
    return frame(300)


# ----------------------------------------------------------------------- fit_model


def test_auto_with_300_segments_fits_target_mean_and_predicts(params, wide):
    X, y, t = wide
    model, report = fit_model(X, y, t, spec_of(params), "log_ratio", LEVEL)
    assert report["segment_encoding"] == "target_mean"
    assert report["segment_levels"] == 300
    assert encoder_of(model).encoding == encoder_of(model).encoding_ == "target_mean"
    pred = model.predict(X)
    assert np.isfinite(pred).all()
    # the per-segment effect is learned: far better than without the segment
    assert np.abs(pred - y).mean() < 0.5 * np.abs(np.expm1(X[LEVEL]) - y).mean()
    assert model_card(model)["segment_encoding"] == "target_mean"


def test_auto_with_300_segments_and_search_lets_the_cv_pick(params, wide):
    X, y, t = wide
    model, report = fit_model(X, y, t, spec_of(params, search=True), "log_ratio", LEVEL)
    search = report["search"]
    cands = search["candidates"]
    # each candidate of the grid tried with both encodings, in this order
    assert [c["segment_encoding"] for c in cands] == ["target_mean", "none"] * 2
    assert [c["params"] for c in cands] == [{"learning_rate": v} for v in (0.05, 0.05, 0.2, 0.2)]
    best = min(cands, key=lambda c: (c["cv_mae"], cands.index(c)))
    assert report["segment_encoding"] == best["segment_encoding"] == encoder_of(model).encoding_
    # the segment effect is strong: the target mean wins
    assert report["segment_encoding"] == "target_mean"
    # only the estimator's hyperparameters: fed back to make_estimator elsewhere
    assert search["best_params"] == best["params"]
    assert set(search["best_params"]) == {"learning_rate"}
    assert np.isfinite(model.predict(X)).all()


def test_chosen_hyperparameters_stay_estimator_hyperparameters(params, wide):
    from panelcast.pipeline.train import chosen_hyperparameters

    X, y, t = wide
    spec = spec_of(params, search=True)
    _, report = fit_model(X, y, t, spec, "log_ratio", LEVEL)
    chosen = chosen_hyperparameters(spec.hyperparameters, report)
    assert set(chosen) == {"max_iter", "learning_rate"}
    make_estimator(spec.model_copy(update={"hyperparameters": chosen}), [], [])  # accepted


def test_auto_without_search_and_many_segments_is_target_mean_for_every_estimator(params, wide):
    X, y, t = wide
    model, report = fit_model(X, y, t, spec_of(params, "Ridge"), "log_ratio", LEVEL)
    assert report["segment_encoding"] == "target_mean"
    assert np.isfinite(model.predict(X)).all()


def test_native_with_300_segments_and_hist_gradient_boosting_is_refused(params, wide):
    X, y, t = wide
    with pytest.raises(ParamsError) as info:
        fit_model(X, y, t, spec_of(params, encoding="native"), "log_ratio", LEVEL)
    text = str(info.value)
    assert "'train.segment_encoding'" in text
    assert "more than 255 segments" in text and "got native with 300 segments" in text
    assert "use auto or target_mean" in text
    assert "\n" not in text


def test_native_limit_follows_max_bins(params):
    X, y, t = frame(40)
    spec = spec_of(params, encoding="native")
    spec = spec.model_copy(update={"hyperparameters": {"max_iter": 5, "max_bins": 31}})
    with pytest.raises(ParamsError, match="more than 31 segments.*got native with 40"):
        fit_model(X, y, t, spec, "log_ratio", LEVEL)
    auto = spec.model_copy(update={"segment_encoding": "auto"})
    _, report = fit_model(X, y, t, auto, "log_ratio", LEVEL)
    assert report["segment_encoding"] == "target_mean"


@pytest.mark.parametrize("estimator", ["Ridge", "RandomForestRegressor", "ExtraTreesRegressor"])
@pytest.mark.parametrize("encoding", ["native", "target_mean", "none", "auto"])
def test_one_hot_estimators_work_with_every_encoding(params, wide, estimator, encoding):
    X, y, t = wide
    model, report = fit_model(X, y, t, spec_of(params, estimator, encoding), "log_ratio", LEVEL)
    assert report["segment_encoding"] == ("target_mean" if encoding == "auto" else encoding)
    assert np.isfinite(model.predict(X)).all()
    pre = model.regressor_.named_steps["preprocess"]
    out = list(pre.get_feature_names_out())
    one_hot = [c for c in out if c.startswith("segment_")]
    assert len(one_hot) == (300 if encoding == "native" else 0)
    assert ("segment" in out) == (report["segment_encoding"] == "target_mean")
    again = loads_model(dumps_model(model))
    np.testing.assert_array_equal(again.predict(X), model.predict(X))


# ----------------------------------------------------------------------- the encoder


def test_target_mean_is_learned_on_the_rows_given_to_fit_only(wide):
    X, y, _ = wide
    z = np.log1p(y.to_numpy()) - X[LEVEL].to_numpy()
    part = X["segment"].isin([f"s{i:04d}" for i in range(100)]).to_numpy()
    part &= np.arange(len(X)) % 3 != 0  # and not every row of those segments
    sub = X[part]
    for smoothing in (0.0, SMOOTHING):
        enc = SegmentEncoder(encoding="target_mean", smoothing=smoothing).fit(sub, z[part])
        groups = pd.Series(z[part]).groupby(sub["segment"].to_numpy())
        sums, counts = groups.sum(), groups.count()
        overall = z[part].mean()
        expected = (sums + smoothing * overall) / (counts + smoothing)
        assert enc.global_mean_ == pytest.approx(overall, rel=1e-12)
        assert list(enc.categories_) == list(expected.index)  # the seen segments only
        np.testing.assert_allclose(enc.encodings_, expected.to_numpy(), rtol=1e-12)
        out = enc.transform(X)
        assert list(out.columns) == list(X.columns) and out["segment"].dtype == float
        seen = X["segment"].isin(expected.index).to_numpy()
        np.testing.assert_allclose(
            out["segment"].to_numpy()[seen],
            expected.reindex(X["segment"].astype(str)[seen]).to_numpy(),
            rtol=1e-12,
        )
        # segments not given to fit, a new one, a missing one: the global mean
        assert (out["segment"].to_numpy()[~seen] == enc.global_mean_).all()
        new = pd.DataFrame({c: X[c].iloc[:3] for c in X.columns}).reset_index(drop=True)
        new["segment"] = pd.Categorical(["s0000", "brand-new", None])
        got = enc.transform(new)["segment"].to_numpy()
        assert got[0] == enc.encodings_[0]
        assert got[1] == got[2] == enc.global_mean_
    # the smoothing pulls a segment seen in few rows towards the global mean
    raw = SegmentEncoder(encoding="target_mean", smoothing=0.0).fit(sub, z[part])
    smooth = SegmentEncoder(encoding="target_mean").fit(sub, z[part])
    assert np.all(
        np.abs(smooth.encodings_ - smooth.global_mean_)
        < np.abs(raw.encodings_ - raw.global_mean_) + 1e-15
    )


def test_the_encoder_keeps_names_and_order(wide):
    X, y, _ = wide
    cols = list(X.columns)
    native = SegmentEncoder(encoding="native").fit(X, y)
    assert native.transform(X) is X
    assert list(native.get_feature_names_out()) == cols
    none = SegmentEncoder(encoding="none").fit(X, y)
    assert list(none.transform(X).columns) == [c for c in cols if c != "segment"]
    assert list(none.get_feature_names_out()) == [c for c in cols if c != "segment"]
    mean = SegmentEncoder(encoding="target_mean").fit(X, y)
    assert list(mean.get_feature_names_out()) == cols
    # auto: native up to max_levels segments that occur in the rows given to fit
    assert SegmentEncoder(max_levels=300).fit(X, y).encoding_ == "native"
    assert SegmentEncoder(max_levels=299).fit(X, y).encoding_ == "target_mean"
    few = X[X["segment"].isin(["s0001", "s0002"])]
    assert segment_levels(few) == 2  # categories that do not occur are not counted
    assert SegmentEncoder(max_levels=2).fit(few, y[few.index]).encoding_ == "native"
    with pytest.raises(ValueError, match="'encoding' parameter of SegmentEncoder must be"):
        SegmentEncoder(encoding="one_hot").fit(X, y)


def test_the_encoder_in_cv_folds_does_not_see_the_validation_rows(params, wide, monkeypatch):
    X, y, t = wide
    seen: list[frozenset] = []
    fit = SegmentEncoder.fit

    def recording(self, X_, y_=None):
        seen.append(frozenset(X_.index))
        return fit(self, X_, y_)

    monkeypatch.setattr(SegmentEncoder, "fit", recording)
    spec = spec_of(params, search=True)  # n_jobs 1: the fold fits run in this process
    assert spec.search.n_jobs == 1
    fit_model(X, y, t, spec, "log_ratio", LEVEL)
    folds = time_folds(t, spec.search.folds, spec.search.fold_periods)
    # one fit per (candidate, fold): 2 learning rates x 2 encodings x 2 folds; then the refit
    assert len(seen) == 4 * len(folds) + 1
    for i, rows in enumerate(seen[:-1]):
        train, val = folds[i % len(folds)]
        assert rows == frozenset(X.index[train])
        assert not rows & frozenset(X.index[val])
    assert seen[-1] == frozenset(X.index)


def test_the_fold_encoding_ignores_validation_targets(params, wide):
    """Changing the targets of a fold's validation rows leaves the encoding learned on its
    training part unchanged (what the CV scores does not leak into the model)."""
    X, y, t = wide
    train, val = time_folds(t, 2, 4)[0]
    spec = spec_of(params, encoding="target_mean")
    est = LevelRatioRegressor(make_estimator(spec, ["segment"], []), LEVEL)
    a = clone(est).fit(X.iloc[train], y.iloc[train])
    y2 = y.copy()
    y2.iloc[val] = y2.iloc[val] + 1000.0
    b = clone(est).fit(X.iloc[train], y2.iloc[train])
    np.testing.assert_array_equal(encoder_of(a).encodings_, encoder_of(b).encodings_)
    whole = clone(est).fit(X, y2)  # the validation rows do move an encoder that sees them
    assert not np.allclose(encoder_of(whole).encodings_, encoder_of(a).encodings_)


# ----------------------------------------------------------------------- persistence, default


def test_skops_round_trip_of_a_target_mean_model(params, wide):
    X, y, t = wide
    spec = spec_of(params, encoding="target_mean")
    model, _ = fit_model(X, y, t, spec, "log_ratio", LEVEL)
    blob = dumps_model(model)
    again, _ = fit_model(X, y, t, spec, "log_ratio", LEVEL)
    assert dumps_model(again) == blob  # byte-stable
    loaded = loads_model(blob)
    assert encoder_of(loaded).encoding_ == "target_mean"
    assert (loaded.predict(X)).tobytes() == model.predict(X).tobytes()
    fresh = X.iloc[:5].copy()
    fresh["segment"] = pd.Categorical(["unknown"] * 5)
    assert loaded.predict(fresh).tobytes() == model.predict(fresh).tobytes()


@pytest.mark.parametrize("search", [False, True])
def test_auto_at_255_segments_or_fewer_is_native(params, search):
    X, y, t = frame(255, periods=16)
    auto, report = fit_model(X, y, t, spec_of(params, search=search), "log_ratio", LEVEL)
    native, report2 = fit_model(
        X, y, t, spec_of(params, encoding="native", search=search), "log_ratio", LEVEL
    )
    assert report["segment_encoding"] == report2["segment_encoding"] == "native"
    assert encoder_of(auto).encoding == "auto"  # a refit on more segments falls back
    assert encoder_of(auto).encoding_ == "native"
    assert auto.predict(X).tobytes() == native.predict(X).tobytes()
    # the HistGradientBoosting model sees the segment as a category
    inner = auto.regressor_.named_steps["estimator"]
    assert bool(inner.is_categorical_[list(X.columns).index("segment")])
    if search:
        assert all("segment_encoding" not in c for c in report["search"]["candidates"])
        assert report["search"] == report2["search"]
