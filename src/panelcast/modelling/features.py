"""Past-only features on a complete grid of periods per segment.

A row is one segment and one *forecast period* ``t`` (of the frequency in
``problem.time``); its target is the observed value at ``t``; every feature uses only
periods strictly before ``t`` (lags start at 1).
With ``scale: log_ratio`` sales features are expressed relative to the segment's
recent level (``log1p(x) - log1p(level)``), so one global model serves small and
large segments alike.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

from ..core.config import FeatureSpec, ProblemSpec, WindowSpec
from ..core.errors import DataError, ParamsError
from ..core.periods import (
    LEVEL_FEATURE,
    PERIOD,
    SEASON_FEATURE,
    SEGMENT_FEATURE,
    TARGET,
    WINDOW,
    Calendar,
    T,
)
from ..data.timeaxis import time_index

logger = logging.getLogger(__name__)


def meta_columns(problem: ProblemSpec) -> list[str]:
    """Columns of the feature table that are not model inputs."""
    return [problem.segment_column, PERIOD, T, WINDOW, TARGET]


def input_columns(problem: ProblemSpec, spec: FeatureSpec) -> list[str]:
    """The columns of the validated table :func:`build_features` reads (the segment, the
    time columns, the target and the exogenous columns): the features stage loads no other."""
    names = [problem.segment_column, *problem.time.columns, problem.target, *spec.exogenous]
    return list(dict.fromkeys(names))


def feature_columns(frame: pd.DataFrame, problem: ProblemSpec) -> list[str]:
    """Model input columns of a feature table, in table order."""
    meta = set(meta_columns(problem))
    return [c for c in frame.columns if c not in meta]


#: Rows decoded at once by :func:`read_rows`.
READ_BATCH = 1 << 16


def read_rows(
    path: str | Path,
    columns: list[str] | None,
    rows: Any = None,
    by: tuple[str, ...] = (),
    arrow_floats: bool = False,
) -> pd.DataFrame:
    """``pd.read_parquet(path, columns=columns)`` (the same values and dtypes; None: every
    column), only the rows the pyarrow filter expression ``rows`` keeps (all when None);
    ``by`` names the columns the expression reads (read along, dropped once filtered).

    ``arrow_floats``: the float64 columns stay arrow arrays (``pd.ArrowDtype``, missing
    values as nulls; the same values as float64 numpy, NaN for null, once converted): a
    copy of the frame (``DataFrame.copy``) then shares their memory.

    The file is decoded in batches of :data:`READ_BATCH` rows, each filtered as it comes,
    and the rows kept are converted with each column's arrow buffers freed once converted:
    the peak is about twice the rows kept, not the file's row groups on top.
    A categorical column keeps the categories, in their order, that a read of the whole
    file gives it (a filter may skip the batches that hold some).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    schema = source.schema_arrow
    columns = list(schema.names) if columns is None else columns
    read = columns + [c for c in by if c not in columns and rows is not None]
    parts = []
    for batch in source.iter_batches(READ_BATCH, columns=read, use_pandas_metadata=True):
        parts.append(batch if rows is None else batch.filter(rows).select(columns))
    kept = pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)
    table = pa.Table.from_batches(parts, schema=kept)
    del parts
    source.close()
    floats = pd.ArrowDtype(pa.float64())
    mapper = (lambda kind: floats if kind == pa.float64() else None) if arrow_floats else None
    frame = table.to_pandas(self_destruct=True, types_mapper=mapper)
    del table
    pa.default_memory_pool().release_unused()  # the decoded batches, back to the system
    for name in columns:
        if rows is not None and isinstance(frame[name].dtype, pd.CategoricalDtype):
            whole = pd.read_parquet(path, columns=[name])[name].cat.categories
            if not frame[name].cat.categories.equals(whole):
                frame[name] = frame[name].cat.set_categories(whole)
    return frame


def take_rows(frame: pd.DataFrame, rows: np.ndarray | None, columns: list[str]) -> pd.DataFrame:
    """``frame[columns]`` at positions ``rows`` (all when None) with a fresh RangeIndex, in
    one copy: the float64 columns are gathered straight into one 2-D block (pandas would
    copy them once to select the rows, once to select the columns, once to consolidate)."""
    floats = [c for c in columns if frame[c].dtype == np.float64]
    n = len(frame) if rows is None else len(rows)
    block = np.empty((len(floats), n))
    for dest, name in zip(block, floats, strict=True):
        values = frame[name].to_numpy()
        if rows is None:
            dest[:] = values
        else:
            np.take(values, rows, out=dest)
    out = pd.DataFrame(block.T, columns=floats, copy=False)
    for position, name in enumerate(columns):
        if name not in floats:
            values = frame[name].array
            out.insert(position, name, values.copy() if rows is None else values.take(rows))
    return out


#: Rows forecast at once by :func:`predict_in_chunks` (the model copies its input twice).
PREDICT_CHUNK = 1 << 17


def predict_in_chunks(
    model: Any, frame: pd.DataFrame, columns: list[str], chunk: int = PREDICT_CHUNK
) -> np.ndarray:
    """``model.predict(frame[columns])`` by slices of ``chunk`` rows (the same values: every
    row is forecast on its own), so the copies of the input (the columns selected, then the
    model's own) stay the size of a slice."""
    parts = [model.predict(frame.iloc[i : i + chunk][columns]) for i in range(0, len(frame), chunk)]
    return np.concatenate(parts) if parts else model.predict(frame[columns])


def period_of(frame: pd.DataFrame, problem: ProblemSpec) -> pd.Series:
    """Period index of each row, from the time columns named in ``problem.time``.

    Raises :class:`DataError` naming the column and a few values when a time is missing
    or unreadable (validate refuses such tables; this guards direct callers).
    """
    missing = [c for c in problem.time.columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"params key 'problem.time': column(s) {missing} are not in the table (its "
            f"columns: {list(frame.columns)[:20]})."
        )
    ok, index = time_index(frame, problem.time)
    if not ok.all():
        bad = frame.loc[~ok, list(problem.time.columns)].head(3).to_dict("records")
        raise DataError(
            f"params key 'problem.time' ({problem.time.describe()}): {int((~ok).sum())} "
            f"row(s) have no readable {problem.calendar.unit}, for example {bad}."
        )
    return pd.Series(index, index=frame.index)


def shift_within(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, k: int) -> np.ndarray:
    """``values`` ``k`` rows earlier within runs of rows (run ``i``: ``lengths[i]`` rows from
    row ``starts[i]``, the runs covering every row in order), NaN in the first ``k`` rows of
    each run: ``groupby(run).shift(k)`` in one copy, as float64."""
    if k < 0:
        raise ValueError(f"k must be at least 0, got {k}")
    out = np.empty(len(values))
    if k == 0:
        out[:] = values
        return out
    out[k:] = values[: len(values) - k]
    out[:k] = np.nan
    heads = starts[:, None] + np.arange(k)
    out[heads[np.arange(k) < lengths[:, None]]] = np.nan
    return out


class _Bounds(BaseIndexer):
    """Window bounds given as arrays (``start`` and ``end`` keyword arguments)."""

    def get_window_bounds(
        self,
        num_values: int = 0,
        min_periods: int | None = None,
        center: bool | None = None,
        closed: str | None = None,
        step: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.start, self.end


@dataclass(frozen=True)
class Grid:
    """A complete grid of periods per segment as arrays, by segment (in sorted order of
    the names), then by period: row ``starts[s] + i`` is period ``i`` of segment ``s``.

    ``values`` holds ``y`` (the target) and the exogenous columns as float64, NaN where
    the table has no row. Every array is one value per row (8 bytes), no Python object per
    row: the feature table of 10M rows is built in a few GB.
    """

    names: np.ndarray  # sorted segment names (objects), one per segment
    starts: np.ndarray  # first grid row of each segment
    lengths: np.ndarray  # grid rows of each segment
    t: np.ndarray  # period index of each row
    values: dict[str, np.ndarray]
    inserted: int  # rows absent from the table

    def __len__(self) -> int:
        return len(self.t)

    def codes(self) -> np.ndarray:
        """Segment code (position in ``names``) of each row."""
        return np.repeat(np.arange(len(self.names)), self.lengths)

    def position(self, segments: pd.Series, t: np.ndarray) -> np.ndarray:
        """The grid row of each (segment, period) pair, -1 for a pair outside the grid."""
        code = pd.Index(self.names).get_indexer(segments.astype(str))
        if not len(self.names):
            return np.full(len(code), -1)
        first = self.t[self.starts]
        offset = t - first[code]
        inside = (code >= 0) & (offset >= 0) & (offset < self.lengths[code])
        return np.where(inside, self.starts[code] + offset, -1)

    def shift(self, values: np.ndarray, k: int) -> np.ndarray:
        """``values`` ``k`` periods earlier in the same segment (NaN before its first
        period): ``groupby(segment).shift(k)`` on the grid, without its temporaries."""
        return shift_within(values, self.starts, self.lengths, k)

    def rolling_mean(self, values: np.ndarray, window: int) -> np.ndarray:
        """Mean of the last ``window`` values within each segment, ignoring missing ones
        (NaN when all are missing): the bits of ``groupby(segment).rolling(window,
        min_periods=1).mean()``, whose windows these are (the same running sums)."""
        end = np.arange(1, len(values) + 1, dtype=np.int64)
        start = end - window
        np.maximum(start, np.repeat(self.starts, self.lengths), out=start)
        rolled = pd.Series(values, copy=False).rolling(_Bounds(start=start, end=end), min_periods=1)
        return rolled.mean().to_numpy()


def grid_of(table: pd.DataFrame, problem: ProblemSpec, exogenous: list[str]) -> Grid:
    """The :class:`Grid` of ``table`` (first to last period of each segment): the table's
    values placed in it by position, the periods absent from the table left missing.

    Raises :class:`DataError` when a segment and period occur in more than one row.
    """
    seg = problem.segment_column
    codes, names = pd.factorize(table[seg].astype(str), sort=True)
    names = np.asarray(names, dtype=object)
    t = np.asarray(period_of(table, problem).to_numpy(), dtype=np.int64)
    first = np.full(len(names), np.iinfo(np.int64).max)
    last = np.full(len(names), np.iinfo(np.int64).min)
    np.minimum.at(first, codes, t)
    np.maximum.at(last, codes, t)
    lengths = last - first + 1
    starts = np.zeros(len(names), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    n = int(lengths.sum())
    row = starts[codes]
    row += t
    row -= first[codes]
    seen = np.zeros(n, dtype=bool)
    seen[row] = True
    filled = int(np.count_nonzero(seen))
    if filled != len(row):
        counts = np.bincount(row, minlength=n)
        dup = np.flatnonzero(counts[row] > 1)[:3]
        examples = [(names[codes[i]], problem.calendar.format(t[i])) for i in dup]
        raise DataError(
            f"{len(row) - filled} row(s) repeat a {seg} and {problem.calendar.unit} of another "
            f"row, for example {examples}: one row per {seg} and {problem.calendar.unit} "
            f"expected."
        )
    del seen
    grid_t = np.repeat(first - starts, lengths)
    grid_t += np.arange(n, dtype=np.int64)
    values: dict[str, np.ndarray] = {}
    for name, col in [("y", problem.target), *((c, c) for c in exogenous)]:
        full = np.full(n, np.nan)
        full[row] = table[col].astype(float).to_numpy()
        values[name] = full
    return Grid(names, starts, lengths, grid_t, values, n - len(row))


def panel(
    table: pd.DataFrame, problem: ProblemSpec, exogenous: list[str]
) -> tuple[pd.DataFrame, int]:
    """A complete grid per segment (first to last period of each segment).

    Returns the grid (segment, t, y, exogenous...) sorted by segment and period, and the
    number of rows inserted for periods absent from the table (their values are missing).
    """
    grid = grid_of(table, problem, exogenous)
    frame = pd.DataFrame({problem.segment_column: grid.names[grid.codes()], T: grid.t})
    for name, values in grid.values.items():
        frame[name] = values
    return frame, grid.inserted


def build_features(
    table: pd.DataFrame, problem: ProblemSpec, spec: FeatureSpec, windows: WindowSpec
) -> tuple[pd.DataFrame, dict]:
    """Build the feature table and a summary of what was counted and dropped.

    Rows are ordered by period, then segment. Each column is computed on the grid and
    gathered straight into its place in the table (the float columns share one block),
    so the peak memory is the table plus a few grid-sized arrays.
    """
    seg = problem.segment_column
    cal = problem.calendar
    grid = grid_of(table, problem, spec.exogenous)
    y = grid.values["y"]
    lag1 = grid.shift(y, 1)
    log_level = np.log1p(grid.rolling_mean(lag1, spec.level_window))
    no_history = np.isnan(log_level)
    kept = np.flatnonzero(~no_history)
    # the grid is by segment, then period: a stable sort on the period orders by both
    order = kept[np.argsort(grid.t[kept], kind="stable")]
    del kept
    lags = sorted(set(spec.lags))
    rolling = sorted(set(spec.rolling))
    exogenous = list(dict.fromkeys(spec.exogenous))  # a repeated name is one column
    floats = [
        TARGET,
        *(f"lag_{k}" for k in lags),
        *(f"roll_{w}" for w in rolling),
        LEVEL_FEATURE,
        *(f"exo_{c}" for c in exogenous),
    ]
    block = np.empty((len(floats), len(order)))
    column = dict(zip(floats, block, strict=True))  # each a view of one row of the block
    np.take(y, order, out=column[TARGET])
    level = column[LEVEL_FEATURE]
    np.take(log_level, order, out=level)
    del log_level
    scaled = spec.scale == "log_ratio"

    def put(name: str, values: np.ndarray) -> None:
        dest = column[name]
        np.take(values, order, out=dest)
        if scaled:  # log1p(x) - log_level, in place
            np.log1p(dest, out=dest)
            dest -= level

    for k in lags:
        put(f"lag_{k}", lag1 if k == 1 else grid.shift(y, k))
    for w in rolling:
        put(f"roll_{w}", grid.rolling_mean(lag1, w))
    del lag1
    for col in exogenous:
        dest = column[f"exo_{col}"]
        np.take(grid.shift(grid.values[col], 1), order, out=dest)
        if scaled:  # log1p(x.clip(lower=0)): -0.0 and NaN kept as they are
            dest[dest < 0] = 0.0
            np.log1p(dest, out=dest)
    t = grid.t[order]
    codes = grid.codes()[order]
    ts, te = cal.parse(windows.train_start), cal.parse(windows.train_end)
    vs, ve = cal.parse(windows.test_start), cal.parse(windows.test_end)
    window = np.full(len(t), 2, dtype=np.int8)  # other
    window[(t >= vs) & (t <= ve)] = 1  # test
    window[(t >= ts) & (t <= te)] = 0  # train (first, as in np.select)
    result = pd.DataFrame(block.T, columns=floats, copy=False)
    result.insert(0, seg, grid.names[codes])
    result.insert(1, PERIOD, _period_labels(t, cal))
    result.insert(2, T, t)
    result.insert(3, WINDOW, np.array(WINDOWS, dtype=object)[window])
    if spec.calendar:
        result[SEASON_FEATURE] = (cal.season_of(t) + 1).astype("int64")
    if spec.segment_feature:
        result[SEGMENT_FEATURE] = pd.Categorical.from_codes(
            codes, categories=pd.Index(grid.names, dtype=object)
        )
    target_missing = np.isnan(column[TARGET])
    summary = {
        "rows": int(len(result)),
        "grid_rows_inserted": int(grid.inserted),
        "dropped_no_history": int(no_history.sum()),
        "target_missing": int(target_missing.sum()),
        "rows_by_window": {
            w: {
                "rows": int((window == i).sum()),
                "with_target": int(((window == i) & ~target_missing).sum()),
            }
            for i, w in enumerate(WINDOWS)
        },
        "features": feature_columns(result, problem),
    }
    for w in ("train", "test"):
        if summary["rows_by_window"][w]["with_target"] == 0:
            first, last = getattr(windows, w + "_start"), getattr(windows, w + "_end")
            raise ParamsError(
                f"params keys 'windows.{w}_start/{w}_end': the {w} window ({first}..{last}) "
                f"holds no row with an observed target; the data spans "
                f"{cal.format(grid.t.min())}..{cal.format(grid.t.max())}."
            )
    logger.info(
        "features: %d rows (%d inserted grid periods, %d without history dropped, "
        "%d missing targets)",
        summary["rows"],
        grid.inserted,
        summary["dropped_no_history"],
        summary["target_missing"],
    )
    return result, summary


#: The values of the window column, in the order of their codes.
WINDOWS = ("train", "test", "other")


def _period_labels(t: np.ndarray, cal: Calendar) -> np.ndarray:
    """The text form of sorted periods ``t``, one string object per distinct period."""
    if len(t) == 0:
        return np.array([], dtype=object)
    change = np.flatnonzero(t[1:] != t[:-1]) + 1
    bounds = np.concatenate([[0], change, [len(t)]])
    labels = np.array([cal.format(p) for p in t[bounds[:-1]]], dtype=object)
    return np.repeat(labels, np.diff(bounds))


def next_period_features(
    history: pd.DataFrame,
    problem: ProblemSpec,
    spec: FeatureSpec,
    categories: list[str] | None = None,
    until: int | None = None,
) -> pd.DataFrame:
    """Feature rows of the period after each segment's history, as :func:`build_features`
    would compute them, in a few vectorised numpy steps (the serving path).

    ``history`` has the source schema (segment, time columns, target, exogenous), one row
    per segment and period. The forecast period of a segment is the one after its last
    period, or after ``until`` for every segment. ``categories`` are the segment levels
    the model was fitted with (default: the segments present). Returns one row per segment
    with the segment, ``period``, ``t`` and every feature column; a segment without any
    value in its recent window has a missing ``log_level`` and cannot be forecast.
    """
    seg = problem.segment_column
    cal = problem.calendar
    width = spec.history_length
    segments = history[seg].astype(str).to_numpy()
    t = period_of(history, problem).to_numpy()
    names, codes = np.unique(segments, return_inverse=True)
    if until is None:
        last = np.full(len(names), np.iinfo(np.int64).min)
        np.maximum.at(last, codes, t)
    else:
        last = np.full(len(names), int(until))
    offset = last[codes] - t  # 0 = the last period, width - 1 = the oldest one read
    keep = (offset >= 0) & (offset < width)
    rows, cols = codes[keep], width - 1 - offset[keep]

    def matrix(values: np.ndarray) -> np.ndarray:
        out = np.full((len(names), width), np.nan)
        out[rows, cols] = values[keep]
        return out

    y = matrix(history[problem.target].to_numpy(dtype=float))
    exo_last = {
        col: matrix(history[col].to_numpy(dtype=float))[:, width - 1] for col in spec.exogenous
    }
    target_t = last + 1
    out = pd.DataFrame({seg: names, PERIOD: [cal.format(p) for p in target_t], T: target_t})
    for name, values in window_features(y, exo_last, target_t, spec, cal.season_length).items():
        out[name] = values
    if spec.segment_feature:
        levels = sorted(names) if categories is None else list(categories)
        out[SEGMENT_FEATURE] = pd.Categorical(names, categories=levels)
    return out


def window_features(
    y: np.ndarray,
    exo_last: dict[str, np.ndarray],
    target_t: np.ndarray,
    spec: FeatureSpec,
    season_length: int,
) -> dict[str, np.ndarray]:
    """Every feature but the segment, for the periods ``target_t``, in table order.

    ``y`` holds each row's recent target values, oldest first, its last column being the
    period before ``target_t`` (width ``spec.history_length``); ``exo_last`` the exogenous
    values of that period; ``season_length`` places ``target_t`` in its season. The
    expressions :func:`next_period_features` and the service's fast path share, so both
    give the same bits.
    """
    width = y.shape[1]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-missing window: NaN, kept
        level = np.nanmean(y[:, width - spec.level_window :], axis=1)
        rolling = {w: np.nanmean(y[:, width - w :], axis=1) for w in sorted(set(spec.rolling))}
    log_level = np.log1p(level)
    scaled = spec.scale == "log_ratio"

    def scale(values: np.ndarray) -> np.ndarray:
        return np.log1p(values) - log_level if scaled else values

    out: dict[str, np.ndarray] = {}
    for k in sorted(set(spec.lags)):
        out[f"lag_{k}"] = scale(y[:, width - k])
    for w, values in rolling.items():
        out[f"roll_{w}"] = scale(values)
    out[LEVEL_FEATURE] = log_level
    for col in spec.exogenous:
        prev = exo_last[col]
        out[f"exo_{col}"] = np.log1p(np.clip(prev, 0, None)) if scaled else prev
    if spec.calendar:
        out[SEASON_FEATURE] = (np.asarray(target_t) % season_length + 1).astype("int64")
    return out
