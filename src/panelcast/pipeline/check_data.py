"""The params checked against the prepared panel, before any model is fitted.

``check_params`` checks what the params alone (and the data contract) can tell. What
needs the data, the span of the prepared panel and the history of its segments, is
checked here, by the validate stage right after ``prepare``, so that a configuration that
cannot work on the table stops there with one line per problem that names the params key,
its value and what would fit, instead of failing later inside a model library:

- the training, test, drift and backtest windows against the span of the data;
- lags, rolling windows and the level window against the history the training window
  offers;
- the search folds and the retrain hold-out against the training window;
- the backtest's first training window against its validation and drift windows;
- ``train.segment_encoding: native`` against the number of segments (HistGradientBoosting
  takes at most ``max_bins`` = 255 categories).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..core.config import Params
from ..core.errors import ParamsError
from ..data.timeaxis import time_index

logger = logging.getLogger(__name__)

__all__ = ["check_data", "data_problems"]


def _span(panel: pd.DataFrame, params: Params) -> tuple[int, int, pd.Series]:
    """First and last period with an observed target, and observed periods per segment."""
    problem = params.problem
    ok, index = time_index(panel, problem.time)
    observed = ok & panel[problem.target].notna().to_numpy(dtype=bool)
    if not observed.any():
        raise ParamsError(
            f"params key 'problem.target': the column {problem.target!r} has no observed "
            f"value in the prepared panel ({len(panel)} rows)."
        )
    t = index[observed]
    segments = panel[problem.segment_column].to_numpy()[observed]
    per_segment = pd.Series(t).groupby(segments).nunique()
    return int(t.min()), int(t.max()), per_segment


def data_problems(
    params: Params, panel: pd.DataFrame, span: tuple[int, int, pd.Series] | None = None
) -> tuple[list[str], list[str]]:
    """Every params problem the prepared ``panel`` reveals (errors), and warnings.
    ``span``: the panel's :func:`_span`, when the caller has it."""
    problem = params.problem
    cal = problem.calendar
    first, last, history = span or _span(panel, params)
    data = f"the data holds {cal.count(last - first + 1)}, {cal.format(first)}..{cal.format(last)}"
    errors: list[str] = []
    warnings: list[str] = []

    def period(key: str, value: str, low: int, high: int, what: str) -> int:
        index = cal.parse(value)
        if not low <= index <= high:
            errors.append(
                f"'{key}' must be within {cal.format(low)}..{cal.format(high)} ({what}; "
                f"{data}), got {value!r}"
            )
        return index

    w = params.windows
    ts = period("windows.train_start", w.train_start, first - 10**6, last, "the training window")
    te = period("windows.train_end", w.train_end, first + 1, last - 1, "the training window")
    period("windows.test_start", w.test_start, first + 1, last, "the test window")
    period("windows.test_end", w.test_end, first + 1, last, "the test window")
    # periods of the training window that can be forecast (the first period has no past)
    usable = te - max(ts, first + 1) + 1
    f = params.features
    width = f.history_length  # periods the features read
    if usable >= 1 and width >= usable:
        key, value = next(  # the key holding the longest length
            (k, v)
            for k, v, n in (
                ("features.lags", f.lags, max(f.lags)),
                ("features.rolling", f.rolling, max(f.rolling, default=0)),
                ("features.level_window", f.level_window, f.level_window),
            )
            if n == width
        )
        errors.append(
            f"'{key}' reads {cal.count(width)} of history, more than the "
            f"{cal.count(usable)} of the training window {w.train_start}..{w.train_end} "
            f"({data}): use lags and windows of at most {max(usable - 1, 1)}, or a longer "
            f"training window, got {value}"
        )
    short = history[history < width + 1]
    if len(short) and len(short) < len(history):
        names = ", ".join(f"{s} ({cal.count(int(n))})" for s, n in short.head(5).items())
        warnings.append(
            f"{len(short)} segment(s) have less history than features.* read "
            f"({cal.count(width)}): their early periods get missing lags: {names}"
        )
    s = params.train.search
    if s.enabled and usable >= 1 and s.folds * s.fold_periods >= usable:
        fits = max(1, min(s.folds, (usable - 1) // s.fold_periods))
        errors.append(
            f"'train.search.folds' x 'train.search.fold_periods' = {s.folds} x "
            f"{s.fold_periods} periods do not fit in the {cal.count(usable)} of the training "
            f"window {w.train_start}..{w.train_end}: use at most {max(usable - 1, 1)} "
            f"periods in all (for example folds {fits}), "
            f"got {s.folds} x {s.fold_periods}"
        )
    hold = params.retrain.test_periods
    if hold >= last - first:
        errors.append(
            f"'retrain.test_periods' must be less than the {cal.count(last - first)} after "
            f"the first period of the data ({data}), got {hold}"
        )
    d = params.drift
    ds = period("drift.current_start", d.current_start, first + 1, last, "the drift window")
    period("drift.current_end", d.current_end, ds, last, "the drift window")
    b = params.backtest
    bs = period(
        "backtest.first_train_start", b.first_train_start, first - 10**6, last, "the backtest"
    )
    be = period("backtest.first_train_end", b.first_train_end, first + 1, last - 1, "the backtest")
    period("backtest.end", b.end, be + 1, last, "the backtest")
    first_window = be - max(bs, first + 1) + 1
    need = max(b.validation_periods, 1) + 1
    if be > first and first_window <= b.validation_periods:
        errors.append(
            f"'backtest.validation_periods' must be less than the {cal.count(first_window)} of "
            f"the first backtest training window {b.first_train_start}..{b.first_train_end} "
            f"(a challenger is fitted before them): use at most {max(first_window - 1, 1)}, "
            f"or an earlier backtest.first_train_start / later first_train_end, "
            f"got {b.validation_periods}"
        )
    elif be > first and first_window < need + width:
        warnings.append(
            f"the first backtest training window {b.first_train_start}..{b.first_train_end} "
            f"({cal.count(first_window)}) is short for features reading {cal.count(width)}"
        )
    if params.train.segment_encoding == "native" and params.features.segment_feature:
        # imported here: the model module loads scikit-learn's estimators (about 1 s),
        # which only this check needs
        from ..modelling.model import native_level_problem

        found = "with an observed target in the prepared panel"
        line = native_level_problem(params.train, int(len(history)), found)
        if line:
            errors.append(line)
    for i, named in enumerate(problem.named_periods):
        start, end = cal.parse(named.start), cal.parse(named.end)
        if end < first or start > last:
            warnings.append(
                f"problem.named_periods[{i}] {named.name} ({named.start}..{named.end}) is "
                f"outside the data ({cal.format(first)}..{cal.format(last)}): nothing to report"
            )
    return list(dict.fromkeys(errors)), warnings


def check_data(params: Params, panel: pd.DataFrame, file: str = "params.yaml") -> dict:
    """Raise one :class:`ParamsError` (one line) with every problem :func:`data_problems`
    finds; log the warnings; return a summary for ``metrics/params_fit.json``."""
    span = _span(panel, params)
    errors, warnings = data_problems(params, panel, span)
    for line in warnings:
        logger.warning(line)
    if errors:
        raise ParamsError(f"{file} does not fit the data: {'; '.join(errors)}")
    first, last, history = span
    cal = params.problem.calendar
    return {
        "first_period": cal.format(first),
        "last_period": cal.format(last),
        "periods": int(last - first + 1),
        "segments": int(len(history)),
        "shortest_history": int(np.min(history.to_numpy())) if len(history) else 0,
        "warnings": warnings,
    }
