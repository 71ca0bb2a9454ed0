"""Data-drift statistics between a stored reference profile and a current window.

The reference side is summarised once, at training time, by :func:`build_profile` into a
JSON-serialisable dict, so monitoring never reloads the training set. :func:`compare` then
checks a current window against that profile, column by column:

* numeric columns: effect = Wasserstein-1 distance in units of the reference standard
  deviation; significance = two-sample Kolmogorov-Smirnov test;
* categorical columns: effect = total variation distance between category shares;
  significance = chi-square test of homogeneity on the 2 x k count table;
* every column: the change of its missing-value rate, tested on its own with a 2 x 2
  chi-square test.

All p-values of one call are adjusted together with Benjamini-Hochberg. A test flags drift
only when its effect reaches the threshold *and* its adjusted p-value is at most ``alpha``:
the effect threshold keeps large windows from flagging negligible shifts, the p-value keeps
small windows from flagging sampling noise.

Everything is vectorised with numpy; the only Python loops run over columns or over the
distinct categories of a column, never over rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

logger = logging.getLogger(__name__)

__all__ = [
    "DriftThresholds",
    "benjamini_hochberg",
    "build_profile",
    "chi2_homogeneity",
    "compare",
    "ecdf_distances",
    "ks_pvalue",
]

PROFILE_VERSION = 1
# Above this effective sample size the KS p-value uses the asymptotic Kolmogorov law.
_KS_EXACT_MAX_N = 10_000


@dataclass(frozen=True)
class DriftThresholds:
    """Decision thresholds; a test flags drift when effect >= threshold and p_adj <= alpha."""

    numeric_effect: float = 0.1  # Wasserstein-1 distance in units of the reference std
    # Total variation distance between category shares. 0.075, not 0.05: on 2k-row windows
    # sampling noise alone gives a 20-category column a TV of ~0.04-0.07, so at 0.05 a
    # 1-point move into a rare category (significant, true TV 0.01) was flagged in 3.8% of
    # 3000 windows (target <= 5%), at 0.075 in <= 2.6%, while a 10-point move is still
    # flagged in >= 99.6% (benchmarks/README.md).
    categorical_effect: float = 0.075
    missing_effect: float = 0.05  # absolute change of the missing-value rate
    alpha: float = 0.05  # family-wise significance after Benjamini-Hochberg
    dataset_share: float = 0.25  # dataset drifts when >= this share of columns drifted ...
    key_columns: tuple[str, ...] = ()  # ... or when any of these columns drifted

    def __post_init__(self) -> None:
        for name in ("numeric_effect", "categorical_effect", "missing_effect"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"DriftThresholds.{name} must be a finite number >= 0, got {value!r}."
                )
        if not (0 < self.alpha < 1):
            raise ValueError(f"DriftThresholds.alpha must lie in (0, 1), got {self.alpha!r}.")
        if not (0 < self.dataset_share <= 1):
            raise ValueError(
                f"DriftThresholds.dataset_share must lie in (0, 1], got {self.dataset_share!r}."
            )
        if isinstance(self.key_columns, str) or not all(
            isinstance(c, str) for c in self.key_columns
        ):
            raise ValueError(
                "DriftThresholds.key_columns must be a tuple of column names, "
                f"got {self.key_columns!r}."
            )
        # Accept any sequence of names but store a tuple, so the instance stays hashable.
        object.__setattr__(self, "key_columns", tuple(self.key_columns))


# --------------------------------------------------------------------------- statistics


def ecdf_distances(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Wasserstein-1 distance and KS statistic between two sorted, equal-weight samples.

    CDF formulation: both empirical CDFs are evaluated (right-continuous) on the merged
    sorted points z; W1 = sum |F_ref - F_cur| * dz and D = max |F_ref - F_cur|. The merge
    inserts the (usually small) reference into the (usually large) current sample, so the
    cost is one pass over the data plus binary searches of the reference points.
    Both inputs must be sorted ascending, finite and non-empty.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    m, k = ref.size, cur.size
    if m == 0 or k == 0:
        raise ValueError(f"ecdf_distances needs two non-empty samples, got sizes {m} and {k}.")
    # #cur <= r_j and #cur < r_j for every reference point.
    cur_le = np.searchsorted(cur, ref, side="right")
    cur_lt = np.searchsorted(cur, ref, side="left")
    # #ref <= x_i for every current point x_i: r_j <= x_i  <=>  #cur < r_j <= i.
    ref_le = np.cumsum(np.bincount(cur_lt, minlength=k)[:k])
    # Merge: each r_j goes after all current points <= r_j (ties: current first), so the
    # reference points land at positions cur_le + j of the merged array.
    is_ref = np.zeros(k + m, dtype=bool)
    is_ref[cur_le + np.arange(m)] = True
    is_cur = ~is_ref
    merged = np.empty(k + m)
    merged[is_ref] = ref
    merged[is_cur] = cur
    gap = np.empty(k + m)
    gap[is_ref] = np.abs(np.arange(1, m + 1) / m - cur_le / k)
    gap[is_cur] = np.abs(ref_le / m - np.arange(1, k + 1) / k)
    gap = gap[:-1]
    dz = np.diff(merged)
    w1 = float((gap * dz).sum())  # not np.dot: BLAS threading costs ms on small inputs
    # Inside a run of tied values only the run's last element holds the right-continuous
    # value; those are exactly the positions followed by a strictly larger point.
    steps = dz > 0
    d = float(gap[steps].max()) if steps.any() else 0.0
    return w1, d


def ks_pvalue(d: float, n_reference: int, n_current: int) -> float:
    """Two-sided two-sample KS p-value from D with n_eff = n_ref * n_cur / (n_ref + n_cur).

    Uses the one-sample Kolmogorov distribution ``kstwo`` at round(n_eff) (as
    ``scipy.stats.ks_2samp(method='asymp')`` does) up to n_eff = 10 000 and its limit
    ``kstwobign`` at D * sqrt(n_eff) beyond.
    """
    if n_reference <= 0 or n_current <= 0:
        raise ValueError(
            "ks_pvalue needs positive sample sizes, "
            f"got n_reference={n_reference}, n_current={n_current}."
        )
    n_eff = n_reference * n_current / (n_reference + n_current)
    if n_eff <= _KS_EXACT_MAX_N:
        p = stats.kstwo.sf(d, max(1, int(np.round(n_eff))))
    else:
        p = stats.kstwobign.sf(d * math.sqrt(n_eff))
    return float(np.clip(p, 0.0, 1.0))


def chi2_homogeneity(table: np.ndarray) -> tuple[float, float]:
    """Pearson chi-square test of homogeneity (no continuity correction) on an r x k table.

    Columns whose total is zero are dropped first. With fewer than two columns (or rows)
    left there is nothing to compare: statistic 0, p-value 1.
    """
    obs = np.asarray(table, dtype=np.float64)
    if obs.ndim != 2 or (obs < 0).any():
        raise ValueError(
            f"chi2_homogeneity expects a 2-D table of non-negative counts, got shape {obs.shape}."
        )
    obs = obs[:, obs.sum(axis=0) > 0]
    obs = obs[obs.sum(axis=1) > 0]
    if obs.shape[0] < 2 or obs.shape[1] < 2:
        return 0.0, 1.0
    expected = np.outer(obs.sum(axis=1), obs.sum(axis=0)) / obs.sum()
    statistic = float(((obs - expected) ** 2 / expected).sum())
    dof = (obs.shape[0] - 1) * (obs.shape[1] - 1)
    return statistic, float(stats.chi2.sf(statistic, dof))


def benjamini_hochberg(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (same as ``scipy.stats.false_discovery_control``)."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or ((p < 0) | (p > 1) | np.isnan(p)).any():
        raise ValueError("benjamini_hochberg expects a 1-D array of p-values in [0, 1].")
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    scaled = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(scaled, 1.0)
    return adjusted


# --------------------------------------------------------------------------- helpers


def _sig(x: float | None, digits: int = 6) -> float | None:
    """Round to ``digits`` significant digits (None passes through)."""
    if x is None:
        return None
    return float(f"{x:.{digits}g}")


def _label(value: Any) -> str:
    """String label of a category: bools/ints via str, integral floats as ints (1.0 -> '1')."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what}: column(s) {missing} not found in the frame; "
            f"expected all of them, found columns {list(frame.columns)}."
        )


def _numeric_values(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The column as float64 with missing values as NaN; rejects non-numeric dtypes."""
    series = frame[column]
    dtype = series.dtype
    if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
        raise ValueError(
            f"Column '{column}' is profiled as numeric: expected a numeric or bool dtype, "
            f"found {dtype}."
        )
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _category_counts(series: pd.Series) -> tuple[dict[str, int], int]:
    """Counts per string label (hash-based value_counts) and the number of missing values."""
    counts = series.value_counts(dropna=True, sort=False)
    out: dict[str, int] = {}
    # Loop over distinct categories only; distinct raw values may share a label (1 and '1').
    for value, count in zip(counts.index, counts.to_numpy(), strict=True):
        if count > 0:
            label = _label(value)
            out[label] = out.get(label, 0) + int(count)
    n_missing = len(series) - sum(out.values())
    return dict(sorted(out.items())), n_missing


def _numeric_profile(values: np.ndarray, n_rows: int, max_quantiles: int) -> dict:
    finite = np.sort(values[np.isfinite(values)])
    n = int(finite.size)
    profile: dict[str, Any] = {
        "kind": "numeric",
        "n": n,
        "n_rows": n_rows,
        "missing_rate": (n_rows - n) / n_rows,
    }
    if n == 0:
        profile.update(mean=None, std=None, values=[])
        return profile
    if n <= max_quantiles:
        sample = finite
    else:
        # Mid-point quantiles (i + 0.5) / q, linear interpolation on the sorted data: an
        # equal-weight q-point sample whose ECDF is within 1/q of the reference ECDF.
        pos = (np.arange(max_quantiles) + 0.5) / max_quantiles * (n - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        frac = pos - lo
        sample = finite[lo] + frac * (finite[hi] - finite[lo])
    profile.update(
        mean=float(finite.mean()),
        std=float(finite.std()),
        values=sample.tolist(),
    )
    return profile


# --------------------------------------------------------------------------- public API


def build_profile(
    frame: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    max_quantiles: int = 10_000,
) -> dict:
    """Reference statistics computed once (at training time), JSON-serialisable (plain floats/ints/str/lists only), so monitoring never reloads the training set."""  # noqa: E501
    if isinstance(numeric, str) or isinstance(categorical, str):
        raise ValueError(
            "build_profile: numeric and categorical must be sequences of column names, "
            "not a single string."
        )
    numeric, categorical = list(numeric), list(categorical)
    names = numeric + categorical
    if not names:
        raise ValueError("build_profile: expected at least one column to profile, found none.")
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise ValueError(
            f"build_profile: column(s) {duplicated} listed twice; each column must be "
            "either numeric or categorical, once."
        )
    if int(max_quantiles) != max_quantiles or max_quantiles < 2:
        raise ValueError(
            f"build_profile: max_quantiles must be an integer >= 2, got {max_quantiles!r}."
        )
    n_rows = len(frame)
    if n_rows == 0:
        raise ValueError("build_profile: the reference frame has 0 rows; expected at least 1.")
    _require_columns(frame, names, "build_profile")

    columns: dict[str, dict] = {}
    for name in numeric:
        columns[name] = _numeric_profile(_numeric_values(frame, name), n_rows, int(max_quantiles))
    for name in categorical:
        counts, n_missing = _category_counts(frame[name])
        columns[name] = {
            "kind": "categorical",
            "n": n_rows - n_missing,
            "n_rows": n_rows,
            "missing_rate": n_missing / n_rows,
            "counts": counts,
        }
    logger.debug(
        "Built drift profile: %d rows, %d numeric and %d categorical columns.",
        n_rows,
        len(numeric),
        len(categorical),
    )
    return {
        "version": PROFILE_VERSION,
        "n_rows": n_rows,
        "max_quantiles": int(max_quantiles),
        "columns": columns,
    }


def _check_profile(profile: dict) -> dict[str, dict]:
    if not isinstance(profile, dict) or not isinstance(profile.get("columns"), dict):
        raise ValueError(
            "compare: expected a profile made by build_profile (a dict with a 'columns' "
            f"mapping), found {type(profile).__name__} without it."
        )
    if profile.get("version") != PROFILE_VERSION:
        raise ValueError(
            f"compare: expected profile version {PROFILE_VERSION}, "
            f"found {profile.get('version')!r}."
        )
    for name, col in profile["columns"].items():
        if col.get("kind") not in ("numeric", "categorical"):
            raise ValueError(
                f"compare: profile column '{name}' has kind {col.get('kind')!r}; "
                "expected 'numeric' or 'categorical'."
            )
    return profile["columns"]


def _numeric_test(ref: dict, values: np.ndarray) -> dict:
    """Distribution part for a numeric column; values are the current column as float."""
    finite = values[np.isfinite(values)]
    result: dict[str, Any] = {"n_current": int(finite.size)}
    if finite.size == 0 or ref["n"] == 0:
        return result | {"effect": None, "statistic": None, "p_value": None}
    finite.sort()
    w1, d = ecdf_distances(np.asarray(ref["values"], dtype=np.float64), finite)
    std = ref["std"]
    # Constant reference (std 0): no scale to measure the distance in, so the effect is
    # 1.0 as soon as the current values differ from that constant, 0 otherwise.
    effect = w1 / std if std > 0 else (1.0 if w1 > 0 else 0.0)
    return result | {
        "effect": effect,
        "wasserstein": w1,
        "statistic": d,
        "p_value": ks_pvalue(d, ref["n"], int(finite.size)),
    }


def _categorical_test(ref: dict, cur_counts: dict[str, int]) -> dict:
    """Distribution part for a categorical column, given the current counts per label."""
    ref_counts: dict[str, int] = ref["counts"]
    unseen = sorted(set(cur_counts) - set(ref_counts))
    result: dict[str, Any] = {"n_current": sum(cur_counts.values()), "unseen": unseen}
    if result["n_current"] == 0 or ref["n"] == 0:
        return result | {"effect": None, "statistic": None, "p_value": None}
    labels = list(ref_counts) + unseen  # an unseen category is its own bin
    table = np.array(
        [
            [ref_counts.get(c, 0) for c in labels],
            [cur_counts.get(c, 0) for c in labels],
        ],
        dtype=np.float64,
    )
    shares = table / table.sum(axis=1, keepdims=True)
    effect = 0.5 * float(np.abs(shares[0] - shares[1]).sum())
    statistic, p_value = chi2_homogeneity(table)
    return result | {"effect": effect, "statistic": statistic, "p_value": p_value}


def compare(profile: dict, current: pd.DataFrame, thresholds: DriftThresholds) -> dict:
    """Compare a current window with a stored reference profile; returns the report dict below.

    Report: ``drifted``, ``reasons``, ``share_drifted``, ``n_reference``, ``n_current`` and
    ``columns`` (per column, in profile order: kind, effect, statistic, p_value, p_adjusted,
    drifted, distribution_drifted, missing_reference, missing_current, missing_effect,
    missing_statistic, missing_p_value, missing_p_adjusted, missing_drifted, plus
    ``wasserstein`` (raw W1) for numeric and ``unseen`` for categorical columns).
    ``effect``/``statistic``/``p_value``/``p_adjusted`` are None when the distribution test
    is skipped because the current (or reference) column has no non-missing value.
    Floats are rounded to 6 significant digits; decisions use the unrounded values.
    """
    if not isinstance(thresholds, DriftThresholds):
        raise ValueError(
            "compare: expected thresholds of type DriftThresholds, "
            f"found {type(thresholds).__name__}."
        )
    ref_columns = _check_profile(profile)
    n_current = len(current)
    if n_current == 0:
        raise ValueError("compare: the current window has 0 rows; expected at least 1.")
    _require_columns(current, list(ref_columns), "compare")
    unknown_keys = [c for c in thresholds.key_columns if c not in ref_columns]
    if unknown_keys:
        raise ValueError(
            f"compare: key column(s) {unknown_keys} are not in the profile; "
            f"expected a subset of {list(ref_columns)}."
        )

    rows: dict[str, dict[str, Any]] = {}
    for name, ref in ref_columns.items():
        if ref["kind"] == "numeric":
            values = _numeric_values(current, name)
            row = _numeric_test(ref, values)
        else:
            cur_counts, _ = _category_counts(current[name])
            row = _categorical_test(ref, cur_counts)
        n_cur_ok = row.pop("n_current")
        ref_missing = ref["n_rows"] - ref["n"]
        cur_missing = n_current - n_cur_ok
        m_stat, m_p = chi2_homogeneity(
            np.array([[ref_missing, ref["n"]], [cur_missing, n_cur_ok]], dtype=np.float64)
        )
        row.update(
            kind=ref["kind"],
            missing_reference=ref_missing / ref["n_rows"],
            missing_current=cur_missing / n_current,
            missing_statistic=m_stat,
            missing_p_value=m_p,
        )
        row["missing_effect"] = abs(row["missing_current"] - row["missing_reference"])
        rows[name] = row

    # One Benjamini-Hochberg family: every distribution test and every missing-rate test.
    keys = [(n, "p_value") for n, r in rows.items() if r["p_value"] is not None]
    keys += [(n, "missing_p_value") for n in rows]
    adjusted = benjamini_hochberg([rows[n][k] for n, k in keys])
    for (name, key), p_adj in zip(keys, adjusted, strict=True):
        rows[name][key.replace("p_value", "p_adjusted")] = float(p_adj)

    alpha = thresholds.alpha
    reasons: list[str] = []
    drifted_columns: list[str] = []
    columns_out: dict[str, dict] = {}
    for name, row in rows.items():
        kind = row["kind"]
        limit = thresholds.numeric_effect if kind == "numeric" else thresholds.categorical_effect
        p_adj = row.get("p_adjusted")
        dist_drift = bool(row["effect"] is not None and row["effect"] >= limit and p_adj <= alpha)
        miss_drift = bool(
            row["missing_effect"] >= thresholds.missing_effect
            and row["missing_p_adjusted"] <= alpha
        )
        if dist_drift:
            if kind == "numeric":
                reasons.append(
                    f"column '{name}': Wasserstein {row['effect']:.3g} std >= {limit:g} "
                    f"and KS p_adj={p_adj:.3g} <= {alpha:g}"
                )
            else:
                extra = f" (unseen: {', '.join(row['unseen'])})" if row["unseen"] else ""
                reasons.append(
                    f"column '{name}': total variation {row['effect']:.3g} >= {limit:g} "
                    f"and chi-square p_adj={p_adj:.3g} <= {alpha:g}{extra}"
                )
        if miss_drift:
            reasons.append(
                f"column '{name}': missing rate {row['missing_reference']:.3g} -> "
                f"{row['missing_current']:.3g} (change {row['missing_effect']:.3g} >= "
                f"{thresholds.missing_effect:g}) and chi-square "
                f"p_adj={row['missing_p_adjusted']:.3g} <= {alpha:g}"
            )
        drifted = dist_drift or miss_drift
        if drifted:
            drifted_columns.append(name)
        out: dict[str, Any] = {
            "kind": kind,
            "effect": _sig(row["effect"]),
            "statistic": _sig(row["statistic"]),
            "p_value": _sig(row["p_value"]),
            "p_adjusted": _sig(p_adj),
            "drifted": drifted,
            "distribution_drifted": dist_drift,
            "missing_reference": _sig(row["missing_reference"]),
            "missing_current": _sig(row["missing_current"]),
            "missing_effect": _sig(row["missing_effect"]),
            "missing_statistic": _sig(row["missing_statistic"]),
            "missing_p_value": _sig(row["missing_p_value"]),
            "missing_p_adjusted": _sig(row["missing_p_adjusted"]),
            "missing_drifted": miss_drift,
        }
        if kind == "numeric":
            out["wasserstein"] = _sig(row.get("wasserstein"))
        else:
            out["unseen"] = row["unseen"]
        columns_out[name] = out

    n_columns = len(rows)
    share = len(drifted_columns) / n_columns
    drifted_keys = [c for c in thresholds.key_columns if c in drifted_columns]
    dataset_drifted = share >= thresholds.dataset_share or bool(drifted_keys)
    if share >= thresholds.dataset_share:
        reasons.append(
            f"dataset: {len(drifted_columns)} of {n_columns} columns drifted "
            f"(share {share:.3g} >= {thresholds.dataset_share:g})"
        )
    if drifted_keys:
        reasons.append(f"dataset: key column(s) {', '.join(drifted_keys)} drifted")
    logger.debug(
        "Drift check: %d of %d columns drifted (dataset drifted: %s).",
        len(drifted_columns),
        n_columns,
        dataset_drifted,
    )
    return {
        "drifted": dataset_drifted,
        "reasons": reasons,
        "share_drifted": _sig(share),
        "n_reference": int(profile.get("n_rows", 0)),
        "n_current": n_current,
        "columns": columns_out,
    }
