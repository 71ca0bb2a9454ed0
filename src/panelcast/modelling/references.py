"""Per-series statistical forecasters scored beside the rules, as accuracy references.

The baseline stage scores statsforecast's per-segment AutoETS, AutoARIMA and Theta
(``baseline.statistical``) on the rules' test rows, with the global model's protocol:
each segment's model is selected and fitted **once** on the segment's series of the
training window (from its first labelled period to the last training period, the same
window the rules read), then forecasts every test period one step ahead from the actual
values before it, without refitting (:meth:`~panelcast.modelling.statistical.FittedStat.one_step`).

Values missing after the segment's last labelled training period are carried forward
before forecasting, so that the forecast of a period never reads that period or a later
one (interpolating a gap would). A segment the family cannot fit (too short a series:
statsforecast refuses tiny datasets) or a forecast that is missing takes the
seasonal-naive rule's forecast instead; those rows are counted as ``fallbacks``, as the
rules count theirs.

The references are never rules: the best rule, and the gain the gate reads, are chosen
among the rules only. The work runs in the calling process, one segment after the other
(AutoARIMA takes up to seconds per segment); each result depends on its own segment only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.config import ProblemSpec
from ..core.periods import TARGET, WINDOW, T
from ..core.progress import Progress
from .features import grid_of
from .metrics import scores
from .statistical import FittedStat, select

logger = logging.getLogger(__name__)

#: The statistical references and what each forecasts.
REFERENCES: dict[str, str] = {
    "auto_ets": "per-segment AutoETS (statsforecast): exponential smoothing chosen by AICc "
    "on the training window, one step ahead without refitting",
    "auto_arima": "per-segment AutoARIMA (statsforecast): ARIMA orders chosen on the training "
    "window, one step ahead without refitting",
    "theta": "per-segment AutoTheta (statsforecast): Theta variant chosen on the training "
    "window, one step ahead without refitting",
}


@dataclass(frozen=True)
class SegmentSeries:
    """One segment's series from its first labelled training period to its last test row:
    the values ``y`` (missing ones carried forward after the training window), the number
    ``n_fit`` of them in the training window, and the grid row of ``y[0]``."""

    name: str
    first_row: int
    y: np.ndarray
    n_fit: int


@dataclass(frozen=True)
class Panel:
    """The series to forecast and where their forecasts go: ``series`` (segments with test
    rows and a labelled training period), ``unfit`` (segments with test rows but none),
    ``at`` the grid row of each feature row (-1 outside the grid), ``test`` the feature
    rows of the test window inside the grid, and ``n_rows`` the grid's length."""

    series: list[SegmentSeries]
    unfit: list[str]
    at: np.ndarray
    test: np.ndarray
    n_rows: int


@dataclass
class ReferenceForecasts:
    """Each family's forecast of every feature row (NaN outside the test window), the
    test rows that fell back to the seasonal-naive rule, the segments that did, and the
    CPU seconds each family took (not reproducible: logged, never stored)."""

    forecasts: dict[str, np.ndarray]
    fallbacks: dict[str, int]
    fell_back_segments: dict[str, list[str]]
    cpu_s: dict[str, float]


def check_families(families: list[str]) -> None:
    """Refuse a family that is not in :data:`REFERENCES`, or one listed twice."""
    unknown = [f for f in families if f not in REFERENCES]
    if unknown:
        raise ValueError(
            f"unknown statistical reference(s) {unknown}; expected some of {list(REFERENCES)}."
        )
    twice = sorted({f for f in families if families.count(f) > 1})
    if twice:
        raise ValueError(f"statistical references {twice} are listed more than once.")


def segment_series(table: pd.DataFrame, features: pd.DataFrame, problem: ProblemSpec) -> Panel:
    """The series of every segment of ``table`` that has test rows in ``features`` (whose
    training rows set the training window), placed on the grid of ``table``."""
    grid = grid_of(table, problem, [])
    window = features[WINDOW].to_numpy()
    train_t = features[T].to_numpy()[window == "train"]
    if not len(train_t):
        raise ValueError("the feature table has no row of the training window.")
    lo, hi = int(train_t.min()), int(train_t.max())
    at = grid.position(features[problem.segment_column], features[T].to_numpy())
    test = (window == "test") & (at >= 0)
    codes = grid.codes()
    last_row = np.full(len(grid.names), -1)
    np.maximum.at(last_row, codes[at[test]], at[test])
    y_all = grid.values["y"]
    series, unfit = [], []
    for code in np.flatnonzero(last_row >= 0):
        start, end = int(grid.starts[code]), int(last_row[code]) + 1
        t, y = grid.t[start:end], y_all[start:end]
        labelled = ~np.isnan(y) & (t >= lo) & (t <= hi)
        if not labelled.any():
            unfit.append(str(grid.names[code]))
            continue
        first = int(np.argmax(labelled))
        last = len(labelled) - 1 - int(np.argmax(labelled[::-1]))
        y = y[first:].copy()
        n_fit = int((t[first:] <= hi).sum())
        _carry_forward(y, last - first + 1)
        series.append(SegmentSeries(str(grid.names[code]), start + first, y, n_fit))
    return Panel(series, unfit, at, test, len(grid))


def _carry_forward(y: np.ndarray, start: int) -> None:
    """Fill missing values of ``y[start:]`` in place with the last value before them (from
    the last labelled training period on: interpolating there would read later values)."""
    for i in range(max(start, 1), len(y)):
        if np.isnan(y[i]):
            y[i] = y[i - 1]


def family_forecasts(
    family: str, series: list[SegmentSeries], n_rows: int, season_length: int, ets_space: str
) -> tuple[np.ndarray, dict[str, str]]:
    """One-step forecasts of ``family`` on every grid row of ``series`` (``n_rows`` grid
    rows in all, NaN elsewhere), and why it could not fit the segments it could not."""
    out = np.full(n_rows, np.nan)
    failed: dict[str, str] = {}
    progress = Progress(f"baseline {family}", len(series), "segments", log=logger)
    for done, seg in enumerate(series, 1):
        y_fit = seg.y[: seg.n_fit]
        try:
            spec = select(family, y_fit, season_length, ets_space)
            pred, _ = FittedStat(family, spec, y_fit, season_length).one_step(seg.y)
        except Exception as exc:  # the segment falls back; the caller names it and why
            failed[seg.name] = f"{type(exc).__name__}: {exc}"
        else:
            out[seg.first_row : seg.first_row + len(pred)] = pred
        progress.update(done, f"{len(failed)} fell back" if failed else "")
    return out, failed


def reference_forecasts(
    table: pd.DataFrame,
    features: pd.DataFrame,
    problem: ProblemSpec,
    families: list[str],
    fallback: np.ndarray,
    ets_space: str = "ZZZ",
) -> ReferenceForecasts:
    """Forecasts of each statistical family for every row of ``features`` (see the module
    docstring); ``fallback`` is the seasonal-naive rule's forecast of each feature row."""
    check_families(families)
    fallback = np.asarray(fallback, dtype=np.float64)
    if fallback.shape != (len(features),):
        raise ValueError(
            f"fallback has shape {fallback.shape} but the feature table has {len(features)} "
            f"rows; expected one fallback forecast per row."
        )
    panel = segment_series(table, features, problem)
    test, at = panel.test, panel.at
    seg_values = features[problem.segment_column].astype(str).to_numpy()
    result = ReferenceForecasts({}, {}, {}, {})
    for family in families:
        cpu = time.process_time()
        on_grid, failed = family_forecasts(
            family, panel.series, panel.n_rows, problem.calendar.season_length, ets_space
        )
        result.cpu_s[family] = time.process_time() - cpu
        pred = np.full(len(features), np.nan)
        pred[test] = on_grid[at[test]]
        gap = test & np.isnan(pred)
        pred[gap] = fallback[gap]
        fell_back = sorted(set(seg_values[gap]))
        result.forecasts[family] = pred
        result.fallbacks[family] = int(gap.sum())
        result.fell_back_segments[family] = fell_back
        if fell_back:
            why = {**{s: "no labelled training period" for s in panel.unfit}, **failed}
            cannot = [f"{s} ({why[s]})" for s in fell_back if s in why]
            logger.warning(
                "%s: %d test row(s) of %d segment(s) take the seasonal-naive rule's forecast "
                "(%s%s)",
                family,
                int(gap.sum()),
                len(fell_back),
                ", ".join(fell_back[:10]) + (", ..." if len(fell_back) > 10 else ""),
                f"; could not fit {'; '.join(cannot[:5])}" if cannot else "",
            )
    return result


def score_references(
    preds: pd.DataFrame, families: list[str], metric: str, fallbacks: dict[str, int]
) -> dict:
    """Scores of each family on the test rows of ``preds`` (the columns named after the
    families, beside the target) and the best one by ``metric``."""
    test = preds[preds[WINDOW] == "test"]
    table = {
        family: {
            "description": REFERENCES[family],
            **scores(test[TARGET], test[family]),
            "fallbacks": fallbacks[family],
        }
        for family in families
    }
    best = min(families, key=lambda f: table[f][metric]) if families else None
    return {"statistical": table, "best_statistical": best}
