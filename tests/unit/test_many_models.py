"""Many models: statistical specifications, the per-segment choice by CV, the engines
(joblib and a real Dask LocalCluster on 127.0.0.1) and the manifest the router reads."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from panelcast.core.config import EngineSpec
from panelcast.core.errors import ModelFileError
from panelcast.core.periods import SEGMENT_FEATURE, TARGET, T
from panelcast.modelling.many import (
    GLOBAL,
    ChunkConfig,
    SegmentData,
    build_manifest,
    chunked,
    fit_chunk,
    fit_segment,
    global_manifest,
    run_chunks,
)
from panelcast.modelling.routing import Router, write_model_dir
from panelcast.modelling.statistical import FittedStat, clean, select

M = 12
HYPER = {"max_iter": 30, "max_leaf_nodes": 7, "min_samples_leaf": 5, "early_stopping": False}
TRAIN = {
    "estimator": "HistGradientBoostingRegressor",
    "hyperparameters": HYPER,
    "seed": 0,
    "search": {
        "enabled": False,
        "method": "grid",
        "n_iter": 1,
        "folds": 2,
        "fold_periods": 12,
        "n_jobs": 1,
        "space": {"max_iter": [30]},
    },
}


def series(n: int = 96, seed: int = 0, noise: float = 0.05, level: float = 100.0) -> np.ndarray:
    """A seasonal series with a trend and multiplicative noise."""
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    season = 1 + 0.3 * np.sin(2 * np.pi * k / M)
    return level * (1 + 0.004 * k) * season * np.exp(rng.normal(0, noise, n))


def own_features(y: np.ndarray) -> pd.DataFrame:
    """Past-only features of one segment (level and two lags), as the feature table has."""
    s = pd.Series(y)
    return pd.DataFrame(
        {
            "log_level": np.log1p(s.shift(1).rolling(12, min_periods=1).mean()).bfill(),
            "lag_1": s.shift(1),
            "lag_12": s.shift(12),
        }
    )


def segment(name: str, y: np.ndarray, start: int = 24000, with_x: bool = False) -> SegmentData:
    return SegmentData(
        name, np.arange(start, start + len(y)), y, own_features(y) if with_x else None
    )


def config(families=("seasonal_naive", "theta"), strategy="per_segment", **kw) -> ChunkConfig:
    last = 24000 + 95
    base = dict(
        strategy=strategy,
        families=tuple(families),
        fold_starts=(last - 23, last - 11),
        fold_periods=12,
        season_length=M,
        min_train_periods=36,
        train=TRAIN,
        hyperparameters=HYPER,
    )
    return ChunkConfig(**{**base, **kw})


# --------------------------------------------------------------------------- statistical


@pytest.mark.parametrize("family", ["auto_ets", "theta", "seasonal_naive"])
def test_one_step_forecasts_read_only_the_past(family):
    y = series()
    spec = select(family, y[:72], M)
    json.dumps(spec)  # a specification is plain JSON: it is what the manifest stores
    model = FittedStat(family, spec, y[:72], M)
    pred, _ = model.one_step(y)
    changed = y.copy()
    changed[80:] *= 3.0  # the future changes...
    pred2, _ = FittedStat(family, spec, y[:72], M).one_step(changed)
    # ...the forecasts up to period 80 (made from periods before it) do not
    np.testing.assert_array_equal(pred[:81], pred2[:81])
    assert not np.array_equal(pred[81:], pred2[81:])
    assert np.isfinite(pred[M + 1 :]).all()


@pytest.mark.parametrize("family", ["auto_ets", "theta"])
def test_a_specification_refits_bit_for_bit(family):
    y = series(seed=3)
    spec = select(family, y[:80], M)
    a = FittedStat(family, spec, y[:80], M).one_step(y)
    b = FittedStat(family, spec, y[:80], M).one_step(y)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


def test_arima_specification_holds_its_orders():
    spec = select("auto_arima", series(72, seed=1), M)
    assert set(spec) == {
        "order",
        "seasonal_order",
        "season_length",
        "include_mean",
        "include_drift",
    }
    assert len(spec["order"]) == 3 and len(spec["seasonal_order"]) == 3
    pred, nxt = FittedStat("auto_arima", spec, series(72, seed=1), M).one_step(series(80, seed=1))
    assert np.isfinite(nxt) and np.isfinite(pred[-8:]).all()


def test_gaps_are_interpolated_and_an_empty_series_refused():
    np.testing.assert_array_equal(clean(np.array([np.nan, 2.0, np.nan, 4.0])), [2, 2, 3, 4])
    with pytest.raises(ValueError, match="no labelled value"):
        clean(np.array([np.nan, np.nan]))


# --------------------------------------------------------------------------- the choice


def test_the_family_with_the_lowest_cv_error_is_chosen():
    exact = np.tile(100.0 + 30 * np.sin(2 * np.pi * np.arange(M) / M), 8)  # a pure season
    result = fit_segment(segment("pure", exact), config())
    assert result.family == "seasonal_naive"
    assert result.cv["seasonal_naive"] == pytest.approx(0.0, abs=1e-9)
    assert result.cv["theta"] > 0
    assert result.cv_mae == result.cv["seasonal_naive"]


def test_the_cv_reads_only_the_training_rows_given():
    y = series(seed=5)
    base = fit_segment(segment("a", y), config())
    # the rows after the last fold are not part of the segment's training data: the caller
    # passes the training window only; appending "test" rows to the data must change
    # nothing as long as the folds are the same and the rows are marked unlabelled
    more = np.concatenate([y, np.full(12, np.nan)])
    again = fit_segment(segment("a", more), config())
    assert again.cv == base.cv and again.family == base.family


def test_best_of_keeps_the_global_model_when_its_folds_are_better():
    y = series(seed=2)
    seg = segment("s", y)
    seg.global_cv = y.copy()  # a perfect global forecast on the folds
    result = fit_segment(seg, config(strategy="best_of"))
    assert result.family == GLOBAL and result.cv[GLOBAL] == 0.0
    seg.global_cv = y * 2.0  # a poor one
    assert fit_segment(seg, config(strategy="best_of")).family != GLOBAL


def test_a_short_segment_keeps_the_global_model():
    result = fit_segment(segment("short", series(30)), config())
    assert result.family == GLOBAL and "min_train_periods" in result.note


def test_one_candidate_is_fitted_without_cv():
    result = fit_segment(segment("one", series()), config(families=("theta",)))
    assert result.family == "theta" and result.cv == {"theta": None}
    assert result.candidate["model"] in {"STM", "OTM", "DSTM", "DOTM"}


def test_the_sklearn_family_fits_the_segments_own_rows():
    y = series(seed=7)
    result = fit_segment(segment("own", y, with_x=True), config(families=("sklearn",)))
    assert result.family == "sklearn" and result.model_bytes
    assert result.candidate == HYPER


# --------------------------------------------------------------------------- the engines


def panel_segments(n: int = 7) -> list[SegmentData]:
    return [segment(f"s{i}", series(seed=i, level=50 + 40 * i)) for i in range(n)]


def plain(results) -> list[tuple]:
    return [(r.segment, r.family, json.dumps(r.candidate), r.cv_mae, r.cv) for r in results]


def test_results_are_identical_on_every_backend_chunk_size_and_worker_count():
    """joblib in-process, joblib in 2 processes, and a real Dask LocalCluster on
    127.0.0.1 (started and stopped by run_chunks) give the same results, bit for bit."""
    data = panel_segments()
    cfg = config(families=("seasonal_naive", "theta", "auto_ets"))
    one = run_chunks(fit_chunk, chunked(data, 7), cfg, EngineSpec(n_jobs=1))
    two = run_chunks(fit_chunk, chunked(data, 2), cfg, EngineSpec(n_jobs=2))
    dask = run_chunks(fit_chunk, chunked(data, 3), cfg, EngineSpec(backend="dask", workers=2))
    assert plain(one) == plain(two) == plain(dask)
    assert {r.family for r in one} - {GLOBAL}  # models were really chosen


def test_dask_on_an_existing_scheduler_from_the_environment(monkeypatch):
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        data = panel_segments(3)
        cfg = config()
        got = run_chunks(fit_chunk, chunked(data, 2), cfg, EngineSpec(backend="dask"))
        assert plain(got) == plain(fit_chunk(data, cfg))


def test_an_unreachable_scheduler_is_a_clear_error():
    from panelcast.core.errors import UserError

    spec = EngineSpec(backend="dask", scheduler="tcp://127.0.0.1:9", connect_timeout_s=1)
    with pytest.raises(UserError, match=r"cannot reach the Dask scheduler 'tcp://127.0.0.1:9'"):
        run_chunks(fit_chunk, [panel_segments(1)], config(), spec)


def test_progress_says_done_rate_and_time_left(caplog):
    caplog.set_level("INFO", logger="panelcast.modelling.many")
    run_chunks(fit_chunk, chunked(panel_segments(3), 1), config(), EngineSpec())
    last = caplog.records[-1].getMessage()
    assert "3/3 segments done" in last and "segments/s" in last


# --------------------------------------------------------------------------- manifest, router


def fitted_results(tmp_path):
    y = [series(seed=i, level=80 + 20 * i) for i in range(3)]
    segs = [segment("a", y[0]), segment("b", y[1], with_x=True), segment("c", y[2])]
    results = [
        fit_segment(segs[0], config(families=("theta",))),
        fit_segment(segs[1], config(families=("sklearn",))),
        fit_segment(segs[2], config(families=("seasonal_naive",), min_train_periods=500)),
    ]
    return y, results


class ConstantModel:
    """Stands for the global model: forecasts -1 (never a real forecast)."""

    def predict(self, X):
        return np.full(len(X), -1.0)


def test_manifest_names_family_candidate_cv_and_file_hash(tmp_path):
    _, results = fitted_results(tmp_path)
    manifest, files = build_manifest(results, "per_segment", "models/model.skops", "ab" * 32, 1.5)
    by = {e["segment"]: e for e in manifest["models"]}
    assert manifest["families"] == {"global": 1, "sklearn": 1, "theta": 1}
    assert by["a"]["family"] == "theta" and by["a"]["file"] is None
    assert by["b"]["sha256"] == hashlib.sha256(files[by["b"]["file"]]).hexdigest()
    assert by["c"] == {**by["c"], "family": "global", "file": "models/model.skops"}
    assert by["c"]["sha256"] == "ab" * 32
    g, _ = global_manifest(["x", "y"], "m.skops", "cd" * 32, None)
    assert [e["family"] for e in g["models"]] == ["global", "global"]


def test_router_routes_each_segment_and_refuses_a_tampered_file(tmp_path):
    y, results = fitted_results(tmp_path)
    manifest, files = build_manifest(results, "per_segment", "models/model.skops", "ab" * 32, None)
    write_model_dir(tmp_path / "segs", manifest, files)
    router = Router.load(tmp_path / "segs", ConstantModel(), M, "city", global_sha256="ab" * 32)
    frames = []
    for name, values in zip("abc", y, strict=True):
        f = own_features(values)
        f[SEGMENT_FEATURE] = name
        f["city"], f[T], f[TARGET] = name, np.arange(24000, 24096), values
        frames.append(f)
    frame = pd.concat(frames, ignore_index=True)
    cols = ["log_level", "lag_1", "lag_12", SEGMENT_FEATURE]
    pred = router.predict(frame, cols, fit_end=24000 + 95)
    a, b, c = pred[:96], pred[96:192], pred[192:]
    assert (c == -1.0).all()  # global
    spec = manifest["models"][0]["candidate"]
    np.testing.assert_array_equal(a, FittedStat("theta", spec, y[0], M).one_step(y[0])[0])
    assert np.isfinite(b).all() and (b > 0).all()  # its own scikit-learn model
    with pytest.raises(ModelFileError, match="different runs"):
        Router.load(tmp_path / "segs", ConstantModel(), M, "city", global_sha256="ef" * 32)
    own = next((tmp_path / "segs").rglob("*.skops"))
    data = bytearray(own.read_bytes())
    data[-1] ^= 0xFF
    own.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=rf"{own.name}: sha256 .* segment 'b'"):
        Router.load(tmp_path / "segs", ConstantModel(), M, "city")
    with pytest.raises(ModelFileError, match="no manifest"):
        Router.load(tmp_path / "nothing", ConstantModel(), M, "city")


def test_chunks_shrink_so_that_no_worker_idles():
    from panelcast.modelling.many import chunk_size

    assert chunk_size(46, EngineSpec(n_jobs=1, chunk_segments=64)) == 64
    assert chunk_size(46, EngineSpec(n_jobs=2, chunk_segments=64)) == 6  # 8 tasks
    assert chunk_size(100_000, EngineSpec(n_jobs=2, chunk_segments=64)) == 64
    assert chunk_size(10, EngineSpec(backend="dask", workers=4, chunk_segments=64)) == 1
