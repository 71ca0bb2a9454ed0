"""Unit tests for panelcast.monitoring.drift: statistics against scipy, then compare()."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from panelcast.monitoring.drift import (
    DriftThresholds,
    benjamini_hochberg,
    build_profile,
    chi2_homogeneity,
    compare,
    ecdf_distances,
    ks_pvalue,
)

NUMERIC = ["x", "y"]
CATEGORICAL = ["c"]


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": rng.normal(shift, 1.0, n),
            "y": rng.poisson(4.0, n),
            "c": rng.choice(["a", "b", "c", "d"], size=n, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("seed", range(6))
def test_w1_and_ks_statistic_match_scipy_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = np.sort(rng.poisson(3.0, rng.integers(1, 80)).astype(float))
    b = np.sort(rng.poisson(3.5, rng.integers(1, 80)).astype(float))
    w1, d = ecdf_distances(a, b)
    assert w1 == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-12, abs=1e-14)
    assert d == pytest.approx(stats.ks_2samp(a, b).statistic, rel=1e-12, abs=1e-14)


def test_w1_and_ks_on_continuous_samples_of_different_sizes() -> None:
    rng = np.random.default_rng(7)
    a = np.sort(rng.lognormal(0.0, 1.0, 500))
    b = np.sort(rng.lognormal(0.2, 1.0, 3000))
    w1, d = ecdf_distances(a, b)
    assert w1 == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-12)
    assert d == pytest.approx(stats.ks_2samp(a, b).statistic, rel=1e-12)
    # Symmetric in its arguments.
    assert ecdf_distances(b, a) == pytest.approx((w1, d), rel=1e-12)


def test_identical_samples_have_zero_distance() -> None:
    a = np.array([1.0, 2.0, 2.0, 5.0])
    assert ecdf_distances(a, a.copy()) == (0.0, 0.0)


def test_ks_pvalue_matches_scipy_asymp_and_is_close_to_exact() -> None:
    rng = np.random.default_rng(3)
    for n1, n2, shift in [(40, 60, 0.0), (150, 90, 0.5), (300, 300, 0.2)]:
        a, b = rng.normal(size=n1), rng.normal(shift, size=n2)
        d = stats.ks_2samp(a, b).statistic
        asymp = stats.ks_2samp(a, b, method="asymp").pvalue
        exact = stats.ks_2samp(a, b, method="exact").pvalue
        assert ks_pvalue(d, n1, n2) == pytest.approx(asymp, rel=1e-10, abs=1e-15)
        # One-sample law at round(n_eff) vs the exact two-sample law: within 0.04 at small n.
        assert ks_pvalue(d, n1, n2) == pytest.approx(exact, abs=0.04)


def test_ks_pvalue_large_n_uses_kolmogorov_limit() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=30_000), rng.normal(0.03, size=30_000)  # n_eff = 15 000
    res = stats.ks_2samp(a, b, method="asymp")
    p = ks_pvalue(res.statistic, a.size, b.size)
    assert p == pytest.approx(stats.kstwobign.sf(res.statistic * np.sqrt(15_000)), rel=1e-12)
    assert p == pytest.approx(res.pvalue, rel=0.05)


def test_chi2_matches_scipy_contingency_without_correction() -> None:
    table = np.array([[30, 12, 0, 7, 51], [22, 19, 0, 3, 60]])
    stat, p = chi2_homogeneity(table)
    ref = stats.chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False)
    assert stat == pytest.approx(ref.statistic, rel=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-10)
    two_by_two = np.array([[5, 95], [30, 70]])
    ref22 = stats.chi2_contingency(two_by_two, correction=False)
    assert chi2_homogeneity(two_by_two) == pytest.approx((ref22.statistic, ref22.pvalue))
    assert chi2_homogeneity(np.array([[0, 10], [0, 20]])) == (0.0, 1.0)


def test_benjamini_hochberg_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 1e-3, size=10), [0.0, 1.0, 0.5, 0.5]])
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p), rtol=1e-12)
    assert benjamini_hochberg([]).size == 0


# --------------------------------------------------------------------------- report vs scipy


def test_report_statistics_match_scipy_when_reference_is_exact() -> None:
    rng = np.random.default_rng(11)
    ref, cur = _frame(rng, 800), _frame(rng, 600, shift=0.3)
    report = compare(build_profile(ref, NUMERIC, CATEGORICAL), cur, DriftThresholds())
    for col in NUMERIC:
        a = ref[col].to_numpy(float)
        b = cur[col].to_numpy(float)
        row = report["columns"][col]
        ks = stats.ks_2samp(a, b, method="asymp")
        assert row["effect"] * a.std() == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-5)
        assert row["statistic"] == pytest.approx(ks.statistic, rel=1e-5)
        assert row["p_value"] == pytest.approx(ks.pvalue, rel=1e-5)
    counts = pd.crosstab(
        np.r_[np.zeros(len(ref)), np.ones(len(cur))], np.r_[ref["c"].to_numpy(), cur["c"]]
    )
    chi = stats.chi2_contingency(counts.to_numpy(), correction=False)
    assert report["columns"]["c"]["statistic"] == pytest.approx(chi.statistic, rel=1e-5)
    assert report["columns"]["c"]["p_value"] == pytest.approx(chi.pvalue, rel=1e-5)


def test_p_adjusted_is_bh_over_all_tests_of_the_call() -> None:
    rng = np.random.default_rng(12)
    ref, cur = _frame(rng, 500), _frame(rng, 500, shift=0.2)
    cur.loc[:40, "y"] = np.nan
    report = compare(build_profile(ref, NUMERIC, CATEGORICAL), cur, DriftThresholds())
    rows = list(report["columns"].values())
    raw = [r["p_value"] for r in rows] + [r["missing_p_value"] for r in rows]
    adj = [r["p_adjusted"] for r in rows] + [r["missing_p_adjusted"] for r in rows]
    np.testing.assert_allclose(adj, stats.false_discovery_control(raw), rtol=1e-4)


# --------------------------------------------------------------------------- behaviour


def test_same_distribution_is_not_drifted() -> None:
    rng = np.random.default_rng(21)
    profile = build_profile(_frame(rng, 3000), NUMERIC, CATEGORICAL)
    report = compare(profile, _frame(rng, 3000), DriftThresholds())
    assert report["drifted"] is False
    assert report["reasons"] == []
    assert not any(col["drifted"] for col in report["columns"].values())
    assert report["n_reference"] == 3000 and report["n_current"] == 3000


def test_half_std_shift_is_drifted_and_named() -> None:
    rng = np.random.default_rng(22)
    profile = build_profile(_frame(rng, 3000), NUMERIC, CATEGORICAL)
    report = compare(profile, _frame(rng, 3000, shift=0.5), DriftThresholds(key_columns=("x",)))
    x = report["columns"]["x"]
    assert x["drifted"] and x["distribution_drifted"]
    assert x["effect"] == pytest.approx(0.5, abs=0.08)
    assert not report["columns"]["y"]["drifted"]
    assert any(r.startswith("column 'x': Wasserstein") for r in report["reasons"])
    assert report["drifted"] is True  # key column drifted although share is 1/3 >= 0.25 too
    assert report["share_drifted"] == pytest.approx(1 / 3, rel=1e-5)
    assert any("key column(s) x" in r for r in report["reasons"])


def test_dataset_verdict_uses_share_when_no_key_column() -> None:
    rng = np.random.default_rng(23)
    profile = build_profile(_frame(rng, 3000), NUMERIC, CATEGORICAL)
    report = compare(profile, _frame(rng, 3000, shift=0.5), DriftThresholds(dataset_share=0.5))
    assert report["columns"]["x"]["drifted"]
    assert report["drifted"] is False  # 1 of 3 columns < 0.5


def test_small_shift_on_large_window_is_not_flagged() -> None:
    rng = np.random.default_rng(24)
    profile = build_profile(_frame(rng, 200_000), NUMERIC, CATEGORICAL)
    report = compare(profile, _frame(rng, 200_000, shift=0.03), DriftThresholds())
    x = report["columns"]["x"]
    assert x["p_adjusted"] < 1e-6  # significant ...
    assert x["effect"] < 0.1  # ... but too small to matter
    assert not x["drifted"]
    assert len(profile["columns"]["x"]["values"]) == 10_000  # sketched reference
    assert profile["columns"]["x"]["n"] == 200_000


def test_unseen_category_gets_its_own_bin() -> None:
    ref = pd.DataFrame({"c": ["a"] * 500 + ["b"] * 500})
    cur = pd.DataFrame({"c": ["a"] * 400 + ["b"] * 400 + ["z"] * 200})
    report = compare(build_profile(ref, [], ["c"]), cur, DriftThresholds())
    row = report["columns"]["c"]
    assert row["unseen"] == ["z"]
    # shares: ref (0.5, 0.5, 0), cur (0.4, 0.4, 0.2) -> TV 0.2
    assert row["effect"] == pytest.approx(0.2)
    chi = stats.chi2_contingency([[500, 500, 0], [400, 400, 200]], correction=False)
    assert row["statistic"] == pytest.approx(chi.statistic, rel=1e-5)
    assert row["drifted"]
    assert "unseen: z" in report["reasons"][0]


def test_bool_and_int_categories_become_strings_consistently() -> None:
    ref = pd.DataFrame({"flag": [True, False] * 50, "code": [1, 2, 3, 4] * 25})
    profile = build_profile(ref, [], ["flag", "code"])
    assert profile["columns"]["flag"]["counts"] == {"False": 50, "True": 50}
    assert profile["columns"]["code"]["counts"] == {"1": 25, "2": 25, "3": 25, "4": 25}
    # Same codes stored as float because of a missing value: not reported as unseen.
    cur = pd.DataFrame({"flag": [True, False] * 50, "code": [1.0, 2.0, 3.0, np.nan] * 25})
    row = compare(profile, cur, DriftThresholds())["columns"]["code"]
    assert row["unseen"] == []
    assert row["missing_current"] == pytest.approx(0.25)


def test_missing_rate_increase_is_flagged() -> None:
    rng = np.random.default_rng(31)
    ref, cur = _frame(rng, 2000), _frame(rng, 2000)
    cur.loc[rng.choice(2000, 600, replace=False), "y"] = np.nan  # 0% -> 30%
    report = compare(build_profile(ref, NUMERIC, CATEGORICAL), cur, DriftThresholds())
    y = report["columns"]["y"]
    assert y["missing_reference"] == 0.0 and y["missing_current"] == pytest.approx(0.3)
    assert y["missing_effect"] == pytest.approx(0.3)
    assert y["missing_drifted"] and y["drifted"] and not y["distribution_drifted"]
    assert any(r.startswith("column 'y': missing rate 0 -> 0.3") for r in report["reasons"])
    assert not report["columns"]["x"]["drifted"]


def test_infinite_values_count_as_missing() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, np.inf, -np.inf, np.nan, 3.0, 4.0, 5.0]})
    col = build_profile(frame, ["x"], [])["columns"]["x"]
    assert col["n"] == 5 and col["n_rows"] == 8
    assert col["missing_rate"] == pytest.approx(3 / 8)
    assert col["values"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert col["mean"] == pytest.approx(3.0)
    assert col["std"] == pytest.approx(np.std([1, 2, 3, 4, 5]))


def test_all_missing_current_column_skips_distribution_test() -> None:
    rng = np.random.default_rng(32)
    ref, cur = _frame(rng, 1000), _frame(rng, 1000)
    cur["x"] = np.nan
    cur["c"] = None
    report = compare(build_profile(ref, NUMERIC, CATEGORICAL), cur, DriftThresholds())
    for name in ("x", "c"):
        row = report["columns"][name]
        assert row["effect"] is None and row["p_value"] is None and row["p_adjusted"] is None
        assert row["missing_current"] == 1.0
        assert row["missing_drifted"] and row["drifted"]
    assert report["columns"]["c"]["unseen"] == []
    json.dumps(report)


def test_constant_reference_uses_unit_effect_when_values_differ() -> None:
    ref = pd.DataFrame({"k": [2.0] * 300})
    same = compare(build_profile(ref, ["k"], []), ref, DriftThresholds())["columns"]["k"]
    assert same["effect"] == 0.0 and not same["drifted"]
    cur = pd.DataFrame({"k": [2.0] * 200 + [3.0] * 100})
    moved = compare(build_profile(ref, ["k"], []), cur, DriftThresholds())["columns"]["k"]
    assert moved["effect"] == 1.0 and moved["drifted"]


def test_missing_column_raises_with_its_name() -> None:
    rng = np.random.default_rng(41)
    ref = _frame(rng, 100)
    with pytest.raises(ValueError, match="'nope'"):
        build_profile(ref, ["x", "nope"], [])
    profile = build_profile(ref, NUMERIC, CATEGORICAL)
    with pytest.raises(ValueError, match="'y'"):
        compare(profile, ref.drop(columns="y"), DriftThresholds())


def test_invalid_inputs_raise_value_error() -> None:
    rng = np.random.default_rng(42)
    ref = _frame(rng, 100)
    profile = build_profile(ref, NUMERIC, CATEGORICAL)
    with pytest.raises(ValueError, match="0 rows"):
        compare(profile, ref.iloc[:0], DriftThresholds())
    with pytest.raises(ValueError, match="numeric"):
        build_profile(ref, ["c"], [])
    with pytest.raises(ValueError, match="listed twice"):
        build_profile(ref, ["x"], ["x"])
    with pytest.raises(ValueError, match="key column"):
        compare(profile, ref, DriftThresholds(key_columns=("zzz",)))
    with pytest.raises(ValueError, match="alpha"):
        DriftThresholds(alpha=0.0)
    with pytest.raises(ValueError, match="profile"):
        compare({"columns": None}, ref, DriftThresholds())


def test_profile_json_round_trip_gives_identical_report() -> None:
    rng = np.random.default_rng(51)
    ref, cur = _frame(rng, 20_000), _frame(rng, 5_000, shift=0.2)
    cur.loc[:99, "x"] = np.nan
    profile = build_profile(ref, NUMERIC, CATEGORICAL, max_quantiles=1000)
    restored = json.loads(json.dumps(profile, allow_nan=False))
    assert restored == profile
    first = compare(profile, cur, DriftThresholds())
    second = compare(restored, cur, DriftThresholds())
    assert json.dumps(first, allow_nan=False) == json.dumps(second, allow_nan=False)
    assert list(first["columns"]) == NUMERIC + CATEGORICAL
    # Quantile sketch: q values, true n kept for the p-value.
    assert len(profile["columns"]["x"]["values"]) == 1000
    assert profile["columns"]["x"]["n"] == 20_000
    x = first["columns"]["x"]
    assert x["p_value"] == pytest.approx(ks_pvalue(x["statistic"], 20_000, 4_900), rel=1e-4)
