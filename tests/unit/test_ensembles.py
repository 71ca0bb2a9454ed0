"""Combinations of the global model with statistical forecasters, and the ``pooled``
choice: members' fold forecasts computed once, the mean used the same way in the CV and at
prediction time, one family chosen over all segments by the CV alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from panelcast.core.config import PerSegmentSpec
from panelcast.modelling import many
from panelcast.modelling.many import (
    GLOBAL,
    SegmentData,
    build_manifest,
    candidates_of,
    choose_pooled,
    fit_segment,
    pooled_scores,
)
from panelcast.modelling.routing import Router
from panelcast.modelling.statistical import (
    FittedStat,
    blend,
    is_statistical,
    member_specs,
    select,
)

from .test_many_models import M, config, series


def seg_with_global(name: str, y: np.ndarray, global_pred: np.ndarray) -> SegmentData:
    """A segment whose global-model fold forecasts are ``global_pred`` (NaN outside)."""
    return SegmentData(name, np.arange(24000, 24000 + len(y)), y, None, global_pred)


def fold_global(y: np.ndarray, cfg, bias: float) -> np.ndarray:
    """A global model's fold forecasts: the truth times ``bias`` on the fold rows."""
    t = np.arange(24000, 24000 + len(y))
    out = np.full(len(y), np.nan)
    for start in cfg.fold_starts:
        rows = (t >= start) & (t < start + cfg.fold_periods)
        out[rows] = y[rows] * bias
    return out


def test_a_combination_is_the_mean_of_its_members():
    y = series(96, seed=4)
    spec = select("auto_ets+theta", y[:72], M)
    assert set(spec) == {"auto_ets", "theta"}
    both = FittedStat("auto_ets+theta", spec, y[:72], M).one_step(y)
    ets = FittedStat("auto_ets", spec["auto_ets"], y[:72], M).one_step(y)
    theta = FittedStat("theta", spec["theta"], y[:72], M).one_step(y)
    np.testing.assert_allclose(both[0], (ets[0] + theta[0]) / 2, rtol=1e-12)
    assert both[1] == pytest.approx((ets[1] + theta[1]) / 2)
    g = np.full(len(y), 100.0)
    np.testing.assert_allclose(
        blend("global+auto_ets+theta", g, both[0]), (g + ets[0] + theta[0]) / 3, rtol=1e-12
    )
    # without the global member, blend leaves the statistical mean alone
    assert blend("auto_ets+theta", g, both[0]) is both[0]


def test_family_names_are_validated_and_normalised():
    spec = PerSegmentSpec(families=["theta+global", "auto_ets"])
    assert spec.families == ["global+theta", "auto_ets"]
    for bad, why in [
        (["global+sklearn"], "sklearn"),
        (["theta+theta"], "twice"),
        (["arima"], "unknown family"),
        (["global+theta", "theta+global"], "more than once"),
    ]:
        with pytest.raises(ValueError, match=why):
            PerSegmentSpec(families=bad)
    assert is_statistical("global+theta") and not is_statistical("global+sklearn")
    assert member_specs("global+theta", {"theta": {"a": 1}}) == {"theta": {"a": 1}}


def test_combinations_add_every_mean_of_the_single_families():
    got = candidates_of("pooled", ["auto_ets", "theta"], combinations=True)
    assert got == [
        "global",
        "auto_ets",
        "theta",
        "global+auto_ets",
        "global+theta",
        "auto_ets+theta",
        "global+auto_ets+theta",
    ]
    assert candidates_of("per_segment", ["theta"], combinations=True) == ["theta"]
    assert candidates_of("best_of", ["theta"]) == ["global", "theta"]


def test_members_are_fitted_once_per_fold_and_shared_by_combinations(monkeypatch):
    calls = []
    real = many._stat_fold_forecast

    def counting(family, *args):
        calls.append(family)
        return real(family, *args)

    monkeypatch.setattr(many, "_stat_fold_forecast", counting)
    cfg = config(("auto_ets", "theta"), strategy="pooled", combinations=True)
    y = series(96, seed=2)
    result = fit_segment(seg_with_global("a", y, fold_global(y, cfg, 1.1)), cfg)
    # 2 statistical members x 2 folds, whatever the 7 candidates that combine them
    assert sorted(calls) == ["auto_ets"] * 2 + ["theta"] * 2
    assert set(result.cv_preds) == set(candidates_of("pooled", cfg.families, True))
    # the CV of a combination is the blend of its members' fold forecasts
    mean = (result.cv_preds["global"] + result.cv_preds["theta"]) / 2
    np.testing.assert_allclose(result.cv_preds["global+theta"], mean, rtol=1e-12)


def test_pooled_choice_is_the_lowest_error_over_all_segments():
    cfg = config(("theta",), strategy="pooled", combinations=True)
    results = []
    for k in range(3):
        y = series(96, seed=10 + k, level=100 * (k + 1))
        # a global model 40 % off: theta and the mean beat it on every segment
        results.append(fit_segment(seg_with_global(f"s{k}", y, fold_global(y, cfg, 1.4)), cfg))
    cands = candidates_of("pooled", cfg.families, True)
    scores, scored = pooled_scores(results, cands, cfg)
    assert scored == 3
    # by hand: the pooled fold MAE of each candidate, averaged over the folds
    starts = np.asarray(cfg.fold_starts)
    for cand in cands:
        per_fold = []
        for k in range(len(starts)):
            errs = np.concatenate(
                [
                    np.abs(r.cv_preds[cand] - r.cv_y)[
                        (r.cv_t >= starts[k]) & (r.cv_t < starts[k] + 12)
                    ]
                    for r in results
                ]
            )
            per_fold.append(errs.mean())
        assert scores[cand] == pytest.approx(np.mean(per_fold))
    assert choose_pooled(scores) == min(cands, key=lambda c: scores[c])
    assert choose_pooled(scores) != GLOBAL
    # an exact global model wins
    exact = [
        fit_segment(
            seg_with_global(
                r.segment,
                series(96, seed=10 + k, level=100 * (k + 1)),
                fold_global(series(96, seed=10 + k, level=100 * (k + 1)), cfg, 1.0),
            ),
            cfg,
        )
        for k, r in enumerate(results)
    ]
    assert choose_pooled(pooled_scores(exact, cands, cfg)[0]) == GLOBAL


def test_a_segment_a_candidate_cannot_forecast_counts_with_the_global_forecasts():
    cfg = config(("theta",), strategy="pooled")
    y = series(96, seed=5)
    good = fit_segment(seg_with_global("a", y, fold_global(y, cfg, 1.2)), cfg)
    bad = fit_segment(seg_with_global("b", y, fold_global(y, cfg, 1.2)), cfg)
    del bad.cv_preds["theta"]  # as if theta had failed on b's folds
    scores, _ = pooled_scores([good, bad], ["global", "theta"], cfg)
    mixed = np.concatenate([good.cv_preds["theta"], bad.cv_preds["global"]])
    truth = np.concatenate([good.cv_y, bad.cv_y])
    t = np.concatenate([good.cv_t, bad.cv_t])
    starts = np.asarray(cfg.fold_starts)
    want = np.mean([np.abs(mixed - truth)[(t >= s) & (t < s + 12)].mean() for s in starts])
    assert scores["theta"] == pytest.approx(want)


def test_router_forecasts_a_combination_as_its_members_mean():
    """The router's forecast of a ``global+theta`` segment: the mean of the global model's
    and the refitted theta model's one-step forecasts."""

    class Constant:
        def predict(self, X):
            return np.full(len(X), 50.0)

    y = series(96, seed=7)
    spec = select("global+theta", y[:80], M)
    results = [
        many.SegmentResult("a", "global+theta", spec, 1.0, {}, 80),
        many.SegmentResult("b", GLOBAL, {}, None, {}, 80),
    ]
    manifest, _ = build_manifest(results, "pooled", "models/model.skops", "x", None)
    frame = pd.DataFrame(
        {
            "city": ["a"] * 96 + ["b"] * 96,
            "t": np.tile(np.arange(24000, 24096), 2),
            "target": np.concatenate([y, y]),
            "segment": ["a"] * 96 + ["b"] * 96,
        }
    )
    router = Router(manifest, Constant(), {}, M, "city")
    rows = (frame["t"] >= 24080).to_numpy()
    got = router.predict(frame, ["segment"], rows, fit_end=24079)
    theta, _ = FittedStat("theta", spec["theta"], y[:80], M).one_step(y)
    np.testing.assert_allclose(got[:16], (50.0 + theta[80:]) / 2, rtol=1e-12)
    np.testing.assert_array_equal(got[16:], 50.0)
