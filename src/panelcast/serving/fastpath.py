"""The forecaster's fast path: the same forecasts as :meth:`Forecaster.forecast` without
rebuilding pandas frames per request.

At load, the stored recent history becomes one numpy array per input column, one row
per segment, aligned on each segment's last stored period (``width`` periods, the
longest lag or window the features read). A request's rows are merged over a copy of
the rows of its segments (a request row replaces the stored row of the same period, and
a later period moves the window forward), and the feature matrix is computed with the
very numpy expressions of :func:`panelcast.modelling.features.next_period_features`.
A unit test checks both paths give identical features and forecasts on many random
requests; ``next_period_features`` stays the single definition of a feature.

Request rows reach the fast path in two ways: :meth:`FastPath.rows_from_records` reads
parsed JSON rows that are plainly valid (every column present, the right Python types,
within the contract's ranges, known segments, a readable time, unique periods, nothing in
the future), and answers ``None`` for anything else, which then takes the contract's own
:func:`panelcast.data.contract.check` (its failures are what a client is told);
:meth:`FastPath.rows_from_frame` reads a frame that passed it.

A segment the deployment routes to a model of its own is forecast as the reference
path forecasts it (:func:`panelcast.pipeline.predict.own_forecasts`): its scikit-learn
model on the same feature row, or its statistical model from the stored series and the
request's rows of that segment (kept aside in :class:`Prepared` for it).

Time is read as ``problem.time`` declares it: year (+ month, quarter or ISO week) integers
row by row (the commonest case, kept cheap), or a date/datetime column parsed once per
request with :func:`panelcast.data.timeaxis.parse_datetimes` (vectorised, the parser the
contract uses, so both read a text the same way). For a single series (no
``problem.segment``) a row may omit the ``series`` column; its one segment is the target.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..core.periods import (
    LEVEL_FEATURE,
    PERIODS_PER_YEAR,
    SEASON_FEATURE,
    SEGMENT_FEATURE,
)
from ..data.timeaxis import parse_datetimes, time_index
from ..modelling.features import period_of, window_features
from ..modelling.intervals import interval
from ..modelling.many import GLOBAL, SKLEARN
from ..modelling.statistical import blend
from ..pipeline.predict import stat_forecast
from .compiled import CompiledModel

if TYPE_CHECKING:
    from .forecaster import Forecaster

#: No stored period (a segment without rows in the serving state).
NONE = np.iinfo(np.int64).min
#: Python ints beyond this are read through the contract's path (exact floats only here).
EXACT_INT = 2**53
#: Seconds the current period is reused for the ``no_future`` rule (a stale value is
#: earlier, hence stricter: a row it refuses takes the contract's path).
NOW_SECONDS = 1.0
#: Date texts whose period the fast path remembers (with a declared format, a text is read
#: the same way in any request; the memory is emptied when full).
DATE_CACHE = 65_536
_MONDAY = dt.date(1970, 1, 5)  # week 0 of the weekly calendar
#: The column (and record key) naming the family of each forecast's model, present when
#: the deployment routes some segment to a model of its own.
FAMILY = "family"
#: Route codes of a segment: the global model, its scikit-learn model, its statistical one.
_GLOBAL, _SKLEARN, _STAT = 0, 1, 2

logger = logging.getLogger(__name__)


@dataclass
class RequestRows:
    """Validated request rows as arrays: segment index, period, values (target, exo...)."""

    seg: np.ndarray
    t: np.ndarray
    values: np.ndarray


@dataclass
class Prepared:
    """Merged history windows of the segments of one request, ready to forecast."""

    seg: np.ndarray  # (m,) segment index, in name order
    last: np.ndarray  # (m,) last period of each merged history
    windows: np.ndarray  # (k, m, width): target then exogenous columns
    #: request rows of statistical segments: segment index -> (periods, target values)
    new: dict[int, tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.seg)


@dataclass
class Forecasts:
    """The answer for one request: per segment, its period, forecast and bounds."""

    segments: list[str]
    periods: list[str]
    forecast: np.ndarray
    bounds: dict[str, np.ndarray]  # lower_80, upper_80, ... in level order
    families: list[str] | None = None  # the model family of each (routed deployments)

    def columns(self) -> list[str]:
        return ["forecast", *self.bounds]

    def frame(self, segment: str, version: str) -> pd.DataFrame:
        """As :meth:`Forecaster.forecast` returns it."""
        out = pd.DataFrame({segment: self.segments, "period": self.periods})
        out["forecast"] = self.forecast
        for name, values in self.bounds.items():
            out[name] = values
        out["model_version"] = version
        if self.families is not None:
            out[FAMILY] = np.array(self.families, dtype=object)
        return out


class FastPath:
    """Precomputed per-segment arrays and the compiled model of one :class:`Forecaster`."""

    def __init__(self, forecaster: Forecaster):
        fc = forecaster
        params = fc.params
        self.problem, self.spec = params.problem, params.features
        self.time, self.calendar = params.problem.time, params.problem.calendar
        self.season_length = self.calendar.season_length
        self.width = self.spec.history_length
        self.names = list(fc.segments)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.name_array = np.array(self.names, dtype=object)
        self.sorted_names = self.names == sorted(self.names)
        self.value_columns = [params.problem.target, *self.spec.exogenous]
        self.inputs = list(fc.metadata["input_schema"])
        self.features = list(fc.metadata["features"])
        self.offsets = {int(k): tuple(v) for k, v in fc.metadata["interval_offsets"].items()}
        self.bound_names = [
            f"{side}_{level}" for level in self.offsets for side in ("lower", "upper")
        ]
        self._state_arrays(fc.state)
        self._contract_rules(fc)
        self.model = fc.model
        self.compiled = CompiledModel.from_model(
            fc.model, self.features, {SEGMENT_FEATURE: self.names}
        )
        self.compiled_checked = False
        self._routes(fc)

    def _routes(self, fc: Forecaster) -> None:
        """The model of each segment: none of this is used when every segment is global."""
        self.own = fc.segment_models if fc.routed else None
        n = len(self.names)
        self.route = np.full(n, _GLOBAL, dtype=np.int8)
        self.family_of = [GLOBAL] * n
        self.level_index = self.features.index(LEVEL_FEATURE)
        #: forecasts of statistical segments from the stored series alone, by (segment, last)
        self.stored_stat: dict[tuple[int, int], float] = {}
        if self.own is None:
            return
        for name, family in self.own.routes.items():
            i = self.index.get(name)
            if i is not None:
                self.route[i] = _SKLEARN if family == SKLEARN else _STAT
                self.family_of[i] = family

    # ------------------------------------------------------------------ stored history

    def _state_arrays(self, state: pd.DataFrame) -> None:
        seg = state[self.problem.segment_column].astype(str).to_numpy()
        t = period_of(state, self.problem).to_numpy(dtype=np.int64)
        idx = np.array([self.index.get(s, -1) for s in seg], dtype=np.intp)
        known = idx >= 0  # state rows of segments the model does not know are never read
        idx, t = idx[known], t[known]
        n = len(self.names)
        last = np.full(n, NONE, dtype=np.int64)
        np.maximum.at(last, idx, t)
        self.last = last
        win = np.full((len(self.value_columns), n, self.width), np.nan)
        off = last[idx] - t
        keep = off < self.width
        values = state[self.value_columns].to_numpy(dtype=float)[known]
        win[:, idx[keep], self.width - 1 - off[keep]] = values[keep].T
        self.windows = win

    # ------------------------------------------------------------------ request rows

    def _contract_rules(self, fc: Forecaster) -> None:
        rules = fc.contract.columns
        problem, time_spec = self.problem, self.time
        seg = problem.segment_column
        self.segment_column = seg
        self.single = problem.single_series
        #: the segment of a row without one (a single series: the target's name)
        self.default_segment = problem.target if self.single else None
        self.date_column, self.date_format = time_spec.column, time_spec.format
        fmt = time_spec.format
        # without a format, pandas infers one from a request's first date: no memory then
        # (nor with UTC offsets, which one request must not mix)
        remember = fmt is not None and "%z" not in fmt and "%Z" not in fmt
        self.date_cache: dict[str, int] | None = {} if remember else None
        self.year_column, self.period_column = time_spec.year_column, time_spec.period_column
        frequency = time_spec.frequency
        self.per_year = PERIODS_PER_YEAR.get(frequency) if self.period_column else None
        self.weekly = frequency == "W" and self.period_column is not None
        if self.single:  # the series column is the service's own, not the source's
            seg_ok, allowed = seg not in rules, None
        else:
            seg_ok = seg in rules and rules[seg].type == "string"
            allowed = rules[seg].allowed if seg in rules else None
        required = [c for c in self.inputs if not (self.single and c == seg)]
        self.fast_ok = seg_ok and set(required) == set(rules)
        self.allowed = set(allowed) if allowed is not None else None
        self.no_future = fc.contract.time.no_future
        self.num_rules = {}
        for name in self.inputs:
            if name == seg or name not in rules:
                continue
            r = rules[name]
            if name == self.date_column:  # read as a date below, whatever its values' type
                if r.type not in ("string", "datetime") or r.allowed is not None:
                    self.fast_ok = False
                continue
            if r.type not in ("integer", "number"):
                self.fast_ok = False
                continue
            lo = -math.inf if r.min is None else float(r.min)
            hi = math.inf if r.max is None else float(r.max)
            if r.max_abs is not None:  # the contract's magnitude guard
                lo, hi = max(lo, -float(r.max_abs)), min(hi, float(r.max_abs))
            self.num_rules[name] = (r.type == "integer", r.nullable, lo, hi)
        self.input_set = frozenset(self.inputs)
        self.required_set = frozenset(required)
        self._now_value, self._now_until = 0, -math.inf
        if not self.fast_ok:
            logger.info(
                "request rows are read through the data contract's check only (its column "
                "rules for %s do not allow the fast reader)",
                required,
            )

    def current_period(self) -> int:
        """The period that holds now (recomputed at most every :data:`NOW_SECONDS`)."""
        clock = time.monotonic()
        if clock >= self._now_until:
            self._now_value = self.calendar.current()
            self._now_until = clock + NOW_SECONDS
        return self._now_value

    def rows_from_records(self, records: list[dict]) -> RequestRows | None:
        """Arrays of JSON rows that plainly pass the contract; ``None`` if any row may not
        (the caller then runs the contract's check, which names what is wrong)."""
        if not self.fast_ok or not records:
            return None
        n, cols = len(records), self.value_columns
        seg = np.empty(n, dtype=np.intp)
        t = np.empty(n, dtype=np.int64)
        values = np.empty((n, len(cols)))
        index, allowed, rules = self.index, self.allowed, self.num_rules
        segment, default = self.segment_column, self.default_segment
        year_col, period_col, per_year = self.year_column, self.period_column, self.per_year
        date_col, weekly = self.date_column, self.weekly
        n_inputs, inputs = len(self.input_set), self.input_set
        single, n_required, required = self.single, len(self.required_set), self.required_set
        now = self.current_period() if self.no_future else None
        dates: list[str] | None = [] if date_col is not None else None
        seen = set()
        for i, row in enumerate(records):
            if len(row) != n_inputs or not inputs.issuperset(row):
                if not (single and len(row) == n_required and required.issuperset(row)):
                    return None
            name = row.get(segment, default)
            if type(name) is not str or name not in index:
                return None
            if allowed is not None and name not in allowed:
                return None
            for col, (integer, nullable, lo, hi) in rules.items():
                v = row[col]
                kind = type(v)
                if v is None:
                    if not nullable:
                        return None
                    continue
                if kind is int:
                    if not -EXACT_INT < v < EXACT_INT:
                        return None
                elif kind is float:
                    if integer or v != v or v in (math.inf, -math.inf):
                        return None
                else:
                    return None
                if not lo <= v <= hi:
                    return None
            if dates is not None:  # parsed all at once below
                v = row[date_col]
                if type(v) is not str:
                    return None
                dates.append(v)
                period = 0
            else:
                y = row[year_col]
                if type(y) is not int or not 1 <= y <= 9999:
                    return None
                if per_year is None:  # yearly: the year is the period
                    period = y
                else:
                    m = row[period_col]
                    if type(m) is not int or not 1 <= m <= per_year:
                        return None
                    if weekly:
                        try:
                            monday = dt.date.fromisocalendar(y, m, 1)
                        except ValueError:  # week 53 of a 52-week year
                            return None
                        period = (monday - _MONDAY).days // 7
                    else:
                        period = y * per_year + m - 1
                if now is not None and period > now:
                    return None
                key = (name, period)
                if key in seen:
                    return None
                seen.add(key)
            seg[i] = index[name]
            t[i] = period
            for j, col in enumerate(cols):
                v = row[col]
                values[i, j] = np.nan if v is None else float(v)
        if dates is not None and not self._read_dates(dates, seg, t, now):
            return None
        return RequestRows(seg, t, values)

    def _read_dates(
        self, dates: list[str], seg: np.ndarray, t: np.ndarray, now: int | None
    ) -> bool:
        """Periods of date texts into ``t`` (new texts parsed at once, as the contract
        parses them); False when one is not readable, in the future, or a second row of a
        segment's period."""
        cache = self.date_cache
        if cache is None:
            index = self._parse_dates(dates)
            if index is None:
                return False
        else:
            known = {d: cache.get(d) for d in dates}
            new = [d for d, v in known.items() if v is None]
            if new:
                parsed = self._parse_dates(new)
                if parsed is None:
                    return False
                fresh = dict(zip(new, parsed.tolist(), strict=True))
                known.update(fresh)
                if len(cache) + len(fresh) > DATE_CACHE:
                    cache.clear()
                cache.update(fresh)
            index = np.fromiter((known[d] for d in dates), dtype=np.int64, count=len(dates))
        if now is not None and int(index.max()) > now:
            return False
        if len(index) > 1:
            order = np.lexsort((index, seg))
            s, p = seg[order], index[order]
            if ((s[1:] == s[:-1]) & (p[1:] == p[:-1])).any():
                return False
        t[:] = index
        return True

    def _parse_dates(self, dates: list[str]) -> np.ndarray | None:
        """Period index of each date text (one vectorised parse); None if one is not
        readable."""
        parsed = parse_datetimes(pd.Series(dates, dtype=object), self.date_format)
        ok, index = self.calendar.from_datetimes(parsed)
        return index if ok.all() else None

    def rows_from_frame(self, frame: pd.DataFrame) -> RequestRows:
        """Arrays of request rows that passed :meth:`Forecaster.validate_rows`."""
        seg = frame[self.segment_column].astype(str).to_numpy()
        idx = np.array([self.index[s] for s in seg], dtype=np.intp)
        ok, t = time_index(frame, self.time)
        if not ok.all():
            raise ValueError(
                f"rows_from_frame needs rows with a readable time (problem.time "
                f"{self.time.describe()}); got {int((~ok).sum())} without one."
            )
        values = frame[self.value_columns].to_numpy(dtype=float)
        return RequestRows(idx, t, values)

    # ------------------------------------------------------------------ forecasting

    def prepare(self, rows: RequestRows | None, segments: list[int] | None = None) -> Prepared:
        """The merged history window of every segment of the request."""
        if not segments and rows is not None and len(rows.seg) == 1:
            return self._prepare_one(rows)
        width, k = self.width, len(self.value_columns)
        parts = [np.asarray(segments or [], dtype=np.intp)]
        if rows is not None:
            parts.append(rows.seg)
        wanted = np.unique(np.concatenate(parts))
        last = self.last[wanted].copy()
        slot = None
        if rows is not None and len(rows.seg):
            slot = np.searchsorted(wanted, rows.seg)
            np.maximum.at(last, slot, rows.t)
        present = last != NONE  # no stored row and no request row: nothing to forecast
        if not present.all():
            wanted, last = wanted[present], last[present]
            if slot is not None:
                slot = np.searchsorted(wanted, rows.seg)
        m = len(wanted)
        windows = np.full((k, m, width), np.nan)
        stored = self.last[wanted]
        has = stored != NONE
        if has.any():
            shift = np.where(has, last - np.where(has, stored, 0), width)
            src = np.arange(width)[None, :] + shift[:, None]
            valid = src < width
            r, c = np.nonzero(valid)
            windows[:, r, c] = self.windows[:, wanted[r], src[r, c]]
        if slot is not None:
            off = last[slot] - rows.t
            keep = (off >= 0) & (off < width)
            windows[:, slot[keep], width - 1 - off[keep]] = rows.values[keep].T
        if not self.sorted_names and m > 1:
            order = np.argsort(self.name_array[wanted].astype(str), kind="stable")
            wanted, last, windows = wanted[order], last[order], windows[:, order]
        return Prepared(wanted, last, windows, self._stat_rows(rows))

    def _stat_rows(
        self, rows: RequestRows | None
    ) -> dict[int, tuple[np.ndarray, np.ndarray]] | None:
        """The request rows of statistical segments (periods, target values) by segment."""
        if self.own is None or rows is None or not len(rows.seg):
            return None
        stat = self.route[rows.seg] == _STAT
        if not stat.any():
            return None
        return {
            int(s): (rows.t[rows.seg == s], rows.values[rows.seg == s, 0])
            for s in np.unique(rows.seg[stat])
        }

    def _prepare_one(self, rows: RequestRows) -> Prepared:
        """:meth:`prepare` for the most common request, one row of one segment (the same
        result, in fewer numpy calls)."""
        width = self.width
        s, t = int(rows.seg[0]), int(rows.t[0])
        stored = int(self.last[s])
        last = t if stored == NONE else max(stored, t)
        windows = np.full((len(self.value_columns), 1, width), np.nan)
        if stored != NONE:
            shift = last - stored
            if shift < width:
                windows[:, 0, : width - shift] = self.windows[:, s, shift:]
        off = last - t
        if off < width:
            windows[:, 0, width - 1 - off] = rows.values[0]
        seg = np.array([s], dtype=np.intp)
        return Prepared(seg, np.array([last], dtype=np.int64), windows, self._stat_rows(rows))

    def feature_matrix(self, prep: Prepared) -> np.ndarray:
        """The model's features (metadata order) as floats; the segment as its index.

        Every expression is the one of ``next_period_features``, on arrays of the same
        shape and layout, so every value has the same bits.
        """
        spec, width = self.spec, self.width
        y = np.ascontiguousarray(prep.windows[0])
        exo_last = {
            col: np.ascontiguousarray(prep.windows[j])[:, width - 1]
            for j, col in enumerate(spec.exogenous, start=1)
        }
        cols = window_features(y, exo_last, prep.last + 1, spec, self.season_length)
        if spec.segment_feature:
            cols[SEGMENT_FEATURE] = prep.seg.astype(np.float64)
        X = np.empty((len(prep), len(self.features)))
        for j, name in enumerate(self.features):
            X[:, j] = cols[name]
        return X

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """Point forecasts of feature rows (missing where the level is unknown)."""
        point = np.full(len(X), np.nan)
        known = ~np.isnan(X[:, self.features.index(LEVEL_FEATURE)])
        if not known.any():
            return point
        rows = X[known]
        if self.compiled is not None:
            point[known] = self.compiled.predict(rows)
        else:
            point[known] = self.model.predict(self.as_frame(rows))
        return point

    def as_frame(self, X: np.ndarray) -> pd.DataFrame:
        """Feature rows as the DataFrame the model was fitted on."""
        frame = pd.DataFrame(X, columns=self.features)
        if SEASON_FEATURE in frame.columns:
            frame[SEASON_FEATURE] = frame[SEASON_FEATURE].astype("int64")
        if SEGMENT_FEATURE in frame.columns:
            frame[SEGMENT_FEATURE] = pd.Categorical.from_codes(
                frame[SEGMENT_FEATURE].to_numpy().astype(np.int64), categories=self.names
            )
        return frame

    def forecast_many(self, batch: list[Prepared]) -> list[Forecasts]:
        """Forecasts for several requests with one model call."""
        sizes = [len(p) for p in batch]
        if len(batch) == 1:
            X = self.feature_matrix(batch[0])
            last = batch[0].last
            seg = batch[0].seg
        else:
            merged = Prepared(
                np.concatenate([p.seg for p in batch]),
                np.concatenate([p.last for p in batch]),
                np.concatenate([p.windows for p in batch], axis=1),
            )
            X = self.feature_matrix(merged)
            last, seg = merged.last, merged.seg
        point = self.predict_matrix(X)
        families = None
        if self.own is not None:
            self._own_forecasts(batch, sizes, seg, last, X, point)
            families = [self.family_of[i] for i in seg.tolist()]
        bounds = {}
        for level, pair in self.offsets.items():
            lower, upper = interval(point, pair)
            bounds[f"lower_{level}"], bounds[f"upper_{level}"] = lower, upper
        out, start, show = [], 0, self.calendar.format
        for size in sizes:
            stop = start + size
            target = last[start:stop] + 1
            out.append(
                Forecasts(
                    [self.names[i] for i in seg[start:stop]],
                    [show(p) for p in target.tolist()],
                    point[start:stop],
                    {name: values[start:stop] for name, values in bounds.items()},
                    None if families is None else families[start:stop],
                )
            )
            start = stop
        return out

    def _own_forecasts(
        self,
        batch: list[Prepared],
        sizes: list[int],
        seg: np.ndarray,
        last: np.ndarray,
        X: np.ndarray,
        point: np.ndarray,
    ) -> None:
        """Replace, in ``point``, the forecasts of segments with a model of their own by
        that model's (as :func:`panelcast.pipeline.predict.own_forecasts` computes them)."""
        codes = self.route[seg]
        todo = np.flatnonzero((codes != _GLOBAL) & ~np.isnan(X[:, self.level_index]))
        if not len(todo):
            return
        item = np.repeat(np.arange(len(batch)), sizes)
        for i in todo.tolist():
            s = int(seg[i])
            name = self.names[s]
            if codes[i] == _SKLEARN:
                model = self.own.sklearn[name]
                frame = self.as_frame(X[i : i + 1])[list(model.feature_names_in_)]
                point[i] = model.predict(frame)[0]
                continue
            new = batch[item[i]].new
            t_new, y_new = new.get(s, (None, None)) if new else (None, None)
            if t_new is None:  # the stored series alone: computed once per period
                key = (s, int(last[i]))
                value = self.stored_stat.get(key)
                if value is None:
                    value = stat_forecast(self.own.stat[name], int(last[i]))
                    self.stored_stat[key] = value
            else:
                value = stat_forecast(self.own.stat[name], int(last[i]), t_new, y_new)
            point[i] = blend(self.family_of[s], point[i], value)

    def forecast(self, rows: RequestRows | None, segments: list[int] | None = None) -> Forecasts:
        return self.forecast_many([self.prepare(rows, segments)])[0]


def check_compiled(fast: FastPath, forecaster: Any) -> bool:
    """Compare the compiled model with ``model.predict`` on every stored segment; keep it
    only if every forecast has the same bits (else fall back to ``model.predict``)."""
    if fast.compiled is None:
        return False
    prep = fast.prepare(None, list(range(len(fast.names))))
    X = fast.feature_matrix(prep)
    known = ~np.isnan(X[:, fast.features.index(LEVEL_FEATURE)])
    if not known.any():
        return True
    rows = X[known]
    small = rows[: min(len(rows), 64)]
    ok = True
    for part in (small, np.concatenate([rows] * (1 + 200 // max(len(rows), 1)))):
        ref = np.asarray(fast.model.predict(fast.as_frame(part)), dtype=float)
        got = fast.compiled.predict(part)
        ok = ok and bool(np.array_equal(ref, got, equal_nan=True))
    if not ok:
        fast.compiled = None
    fast.compiled_checked = True
    return ok


def as_float_list(values: Any) -> list[float | None]:
    """JSON-ready floats: NaN becomes None."""
    return [None if v != v else v for v in np.asarray(values, dtype=float).tolist()]
