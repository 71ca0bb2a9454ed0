"""The model: an estimator factory, a level-ratio target wrapper, the segment encoder,
time-ordered search, and safe, byte-stable persistence with skops (never pickle)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, parallel_config
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import (
    ExtraTreesRegressor,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ..core.config import TrainSpec
from ..core.errors import ModelFileError, ParamsError
from ..core.periods import SEGMENT_FEATURE, Calendar
from ..core.progress import Progress

logger = logging.getLogger(__name__)

ESTIMATORS: dict[str, type[BaseEstimator]] = {
    "HistGradientBoostingRegressor": HistGradientBoostingRegressor,
    "RandomForestRegressor": RandomForestRegressor,
    "ExtraTreesRegressor": ExtraTreesRegressor,
    "Ridge": Ridge,
}
NATIVE_MISSING = {"HistGradientBoostingRegressor"}
#: How the global model sees the segment column (``train.segment_encoding``).
SEGMENT_ENCODINGS = ("auto", "native", "target_mean", "none")
#: ``auto`` keeps the segment categorical up to this many levels (HistGradientBoosting's
#: default ``max_bins``: its native categorical support refuses more).
MAX_NATIVE_LEVELS = 255
#: Pseudo-count of the target-mean encoding: a segment seen in ``n`` rows gets
#: ``(n * its mean + SMOOTHING * global mean) / (n + SMOOTHING)``.
SMOOTHING = 10.0


class LevelRatioRegressor(RegressorMixin, BaseEstimator):
    """Fit ``regressor`` on ``log1p(y) - level`` and predict ``expm1(pred + level)``.

    ``level`` is the column ``level_feature`` of ``X`` (``log1p`` of the segment's recent
    level), so the inner model learns scale-free ratios; ``scale='none'`` fits on ``y``.
    """

    def __init__(
        self, regressor: Any = None, level_feature: str = "log_level", scale: str = "log_ratio"
    ):
        self.regressor = regressor
        self.level_feature = level_feature
        self.scale = scale

    def _level(self, X: pd.DataFrame) -> np.ndarray:
        if self.level_feature not in X.columns:
            raise ValueError(
                f"X has no column {self.level_feature!r}; the model expects it as the level "
                f"feature (found {list(X.columns)[:8]}...)."
            )
        return X[self.level_feature].to_numpy(dtype=float)

    def fit(self, X: pd.DataFrame, y: Any) -> LevelRatioRegressor:
        """Fit on rows of ``X`` (a DataFrame with the feature columns)."""
        if self.scale not in ("log_ratio", "none"):
            raise ValueError(f"scale must be 'log_ratio' or 'none', got {self.scale!r}.")
        y = np.asarray(y, dtype=float)
        z = np.log1p(y) - self._level(X) if self.scale == "log_ratio" else y
        self.regressor_ = clone(self.regressor).fit(X, z)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Forecast on the original scale (never below zero)."""
        check_is_fitted(self, "regressor_")
        expected = list(self.feature_names_in_)
        if list(X.columns) != expected:
            missing = [c for c in expected if c not in X.columns]
            raise ValueError(
                f"X has columns {list(X.columns)[:6]}... but the model was fitted with "
                f"{len(expected)} features; missing {missing}, order must match."
            )
        z = self.regressor_.predict(X)
        pred = np.expm1(z + self._level(X)) if self.scale == "log_ratio" else z
        return np.clip(pred, 0, None)


class SegmentEncoder(TransformerMixin, BaseEstimator):
    """How the model sees the segment column ``column`` of a DataFrame; the other columns
    pass through untouched, in order.

    - ``native``: unchanged (a pandas categorical: HistGradientBoosting's native
      categorical support, one-hot columns for the other estimators);
    - ``target_mean``: replaced, in place and under the same name, by a float column: the
      mean of the fitted target (``y`` of :meth:`fit`: ``log1p(y) - level`` inside
      :class:`LevelRatioRegressor`) over the segment's rows, shrunk towards the global mean
      by ``smoothing`` pseudo-rows: ``(n * mean + smoothing * global) / (n + smoothing)``.
      A segment not seen in :meth:`fit` (or a missing one) gets the global mean;
    - ``none``: the column is dropped;
    - ``auto``: ``native`` when the rows given to :meth:`fit` hold at most ``max_levels``
      segments, else ``target_mean`` (the encoding used is ``encoding_``).

    Everything is learned in :meth:`fit` from the rows it is given only (in a CV fold: the
    fold's training part). A frame without ``column`` passes through unchanged.
    """

    def __init__(
        self,
        column: str = SEGMENT_FEATURE,
        encoding: str = "auto",
        smoothing: float = SMOOTHING,
        max_levels: int = MAX_NATIVE_LEVELS,
    ):
        self.column = column
        self.encoding = encoding
        self.smoothing = smoothing
        self.max_levels = max_levels

    def fit(self, X: pd.DataFrame, y: Any = None) -> SegmentEncoder:
        """Learn the encoding of ``X[column]`` (and, for ``target_mean``, its target means)."""
        if self.encoding not in SEGMENT_ENCODINGS:
            raise ValueError(
                f"The 'encoding' parameter of SegmentEncoder must be one of "
                f"{list(SEGMENT_ENCODINGS)}. Got {self.encoding!r} instead."
            )
        if not self.smoothing >= 0:
            raise ValueError(
                f"The 'smoothing' parameter of SegmentEncoder must be a float >= 0. "
                f"Got {self.smoothing!r} instead."
            )
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"SegmentEncoder expects a pandas DataFrame, got {type(X).__name__}.")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        present = self.column in X.columns
        self.n_levels_ = segment_levels(X, self.column)
        encoding = self.encoding
        if encoding == "auto":
            encoding = "native" if self.n_levels_ <= self.max_levels else "target_mean"
        self.encoding_ = encoding if present else "native"
        if self.encoding_ == "target_mean":
            self._fit_means(X[self.column], y)
        return self

    def _fit_means(self, col: pd.Series, y: Any) -> None:
        if y is None:
            raise ValueError("SegmentEncoder with encoding='target_mean' needs y in fit.")
        z = np.asarray(y, dtype=float)
        if z.shape != (len(col),):
            raise ValueError(
                f"y must hold one value per row of X ({len(col)} rows), got shape {z.shape}."
            )
        codes, uniques = pd.factorize(col, sort=True)
        ok = (codes >= 0) & np.isfinite(z)
        counts = np.bincount(codes[ok], minlength=len(uniques)).astype(float)
        sums = np.bincount(codes[ok], weights=z[ok], minlength=len(uniques))
        self.global_mean_ = float(z[ok].mean()) if ok.any() else 0.0
        seen = counts > 0
        m = float(self.smoothing)
        # an array (strings: fixed width) is stored by skops as one .npy entry, not a node
        # per segment: 55,000 segments load in milliseconds
        self.categories_ = np.asarray([_plain(v) for v in np.asarray(uniques, dtype=object)[seen]])
        self.counts_ = counts[seen].astype(np.int64)
        self.encodings_ = (sums[seen] + m * self.global_mean_) / (counts[seen] + m)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """``X`` with the segment column encoded (the same frame for ``native``)."""
        check_is_fitted(self, "encoding_")
        if self.encoding_ == "native" or self.column not in self.feature_names_in_:
            return X
        if self.column not in X.columns:
            raise ValueError(
                f"X has no column {self.column!r}; SegmentEncoder was fitted with it "
                f"(found {list(X.columns)[:8]}...)."
            )
        if self.encoding_ == "none":
            return X.drop(columns=[self.column])
        out = X.copy()
        out[self.column] = self.encode(X[self.column])
        return out

    def encode(self, values: pd.Series) -> np.ndarray:
        """The target-mean encoding of segment ``values`` (global mean when unseen)."""
        check_is_fitted(self, "encodings_")
        known = pd.Index(self.categories_)
        if isinstance(values.dtype, pd.CategoricalDtype):
            # encode the (few) categories, then index by code: linear in the rows
            pos = known.get_indexer(values.cat.categories)
            per_category = np.append(
                np.where(pos >= 0, self.encodings_[pos], self.global_mean_), self.global_mean_
            )
            return per_category[values.cat.codes.to_numpy()]  # code -1 (missing): the last
        pos = known.get_indexer(values)
        return np.where(pos >= 0, self.encodings_[pos], self.global_mean_)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The columns :meth:`transform` returns (the input's, minus the segment for none)."""
        check_is_fitted(self, "encoding_")
        names = list(self.feature_names_in_)
        if self.encoding_ == "none" and self.column in names:
            names.remove(self.column)
        return np.asarray(names, dtype=object)


def segment_levels(X: pd.DataFrame, column: str = SEGMENT_FEATURE) -> int:
    """Distinct segments (missing values aside) that occur in ``X[column]`` (0 without it):
    what HistGradientBoosting counts against ``max_bins``."""
    if column not in X.columns:
        return 0
    col = X[column]
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()
        return int(np.count_nonzero(np.bincount(codes[codes >= 0], minlength=1)))
    return int(col.nunique(dropna=True))


def native_level_limit(spec: TrainSpec) -> int | None:
    """Most segments ``native`` encoding can take with ``spec``'s estimator: the smallest
    ``max_bins`` HistGradientBoosting is given (in ``hyperparameters`` or, with the search,
    in its space), None (no limit) for the estimators that one-hot encode."""
    if spec.estimator != "HistGradientBoostingRegressor":
        return None
    default = HistGradientBoostingRegressor().max_bins
    bins = [spec.hyperparameters.get("max_bins", default)]
    if spec.search.enabled:
        bins += list(spec.search.space.get("max_bins", []))
    bins = [b for b in bins if isinstance(b, int) and not isinstance(b, bool)]
    return min(bins, default=default)


def native_level_problem(spec: TrainSpec, levels: int, found: str) -> str | None:
    """Why ``train.segment_encoding: native`` cannot work with ``levels`` segments (None
    when it can); ``found`` says where they were counted."""
    limit = native_level_limit(spec)
    if spec.segment_encoding != "native" or limit is None or levels <= limit:
        return None
    return (
        f"'train.segment_encoding' must not be native with more than {limit} segments for "
        f"{spec.estimator} (its categorical support takes at most max_bins = {limit} "
        f"levels): use auto or target_mean (or none), got native with {levels} segments "
        f"{found}"
    )


def make_estimator(spec: TrainSpec, categorical: list[str], numeric: list[str]) -> Pipeline:
    """Return an **unfitted** pipeline for the estimator named in params: the
    :class:`SegmentEncoder` (step ``segment``, ``train.segment_encoding``), then the
    estimator (after a scaler and one-hot encoder for those without native categories).

    ``categorical`` and ``numeric`` are the columns of each kind the pipeline is given; the
    one-hot encoder takes the categorical columns the segment encoder leaves (selected by
    dtype: a ``target_mean`` segment is numeric, a ``none`` one is gone).
    """
    if spec.estimator not in ESTIMATORS:
        raise ParamsError(
            f"params key 'train.estimator': unknown estimator {spec.estimator!r}; "
            f"expected one of {sorted(ESTIMATORS)}."
        )
    cls = ESTIMATORS[spec.estimator]
    hyper = dict(spec.hyperparameters)
    check_hyperparameters(spec.estimator, hyper, "train.hyperparameters")
    accepted = cls().get_params()
    if "random_state" in accepted:
        hyper["random_state"] = spec.seed
    limit = native_level_limit(spec) or MAX_NATIVE_LEVELS
    encoder = SegmentEncoder(SEGMENT_FEATURE, spec.segment_encoding, max_levels=limit)
    steps: list[tuple[str, Any]] = [("segment", encoder)]
    if spec.estimator == "HistGradientBoostingRegressor":
        hyper.setdefault("categorical_features", "from_dtype")
        steps.append(("estimator", cls(**hyper)))
    else:
        pre = ColumnTransformer(
            [
                (
                    "num",
                    make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                    make_column_selector(dtype_exclude="category"),
                ),
                (
                    "cat",
                    OneHotEncoder(handle_unknown="ignore"),
                    make_column_selector(dtype_include="category"),
                ),
            ],
            verbose_feature_names_out=False,
        )
        steps += [("preprocess", pre), ("estimator", cls(**hyper))]
    return Pipeline(steps)


def check_hyperparameters(estimator: str, hyper: dict[str, Any], key: str) -> None:
    """Refuse a hyperparameter the estimator does not accept, naming it."""
    accepted = ESTIMATORS[estimator]().get_params()
    bad = sorted(set(hyper) - set(accepted))
    if bad:
        raise ParamsError(
            f"params key '{key}': {estimator} does not accept {bad}; accepted: {sorted(accepted)}."
        )


def time_folds(
    t: np.ndarray, folds: int, fold_periods: int, calendar: Calendar | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds: each validates on ``fold_periods`` periods after its training
    part (``t`` holds period indices; ``calendar`` names them in messages).

    The last fold ends at the last period of ``t``; nothing is shuffled across time.
    """
    t = np.asarray(t)
    last = int(t.max())
    splits = []
    for i in range(folds, 0, -1):
        start = last - i * fold_periods + 1
        train = np.flatnonzero(t < start)
        val = np.flatnonzero((t >= start) & (t < start + fold_periods))
        if len(train) == 0 or len(val) == 0:
            if calendar is None:
                length = f"{fold_periods} periods"
                span = f"{int(t.min())}..{last} as period indices"
            else:
                length = calendar.count(fold_periods)
                span = f"{calendar.format(t.min())}..{calendar.format(last)}"
            raise ParamsError(
                f"params keys 'train.search.folds/fold_periods': {folds} folds of {length} do "
                f"not fit in the training window ({span}); fold {folds - i + 1} has "
                f"{len(train)} training and {len(val)} validation rows."
            )
        splits.append((train, val))
    return splits


def with_unit(value: float | None, unit: str | None, digits: int = 2) -> str:
    """A figure of the target for logs: ``"38.66 homes"`` (``problem.unit``), or ``"38.66"``
    when params give no unit; ``"-"`` when there is no figure."""
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return f"{text} {unit}" if unit else text


def fit_model(
    X: pd.DataFrame,
    y: pd.Series,
    t: np.ndarray,
    spec: TrainSpec,
    scale: str,
    level_feature: str,
    threads: int = 1,
    calendar: Calendar | None = None,
    fold_forecasts: np.ndarray | None = None,
) -> tuple[LevelRatioRegressor, dict]:
    """Fit the model, with the time-ordered hyperparameter search when enabled.

    ``fold_forecasts`` (an array of ``len(X)``), when given, receives the chosen
    candidate's forecast of every validation row of the folds (out of sample: each fold's
    model is fitted before it); other rows are left as they are.

    ``t`` holds the period index of each row (the folds are cut in it); ``calendar``
    (``problem.calendar``) names the periods in messages.

    The search scores every (candidate, fold) pair in ``spec.search.n_jobs`` processes,
    each with its thread pools pinned to ``threads`` (1 keeps the bytes of the model the
    same on any core count). Candidates, scores and the choice are those of scikit-learn's
    ``GridSearchCV`` / ``RandomizedSearchCV`` (``random_state=seed``) with the MAE: the mean
    over folds (unweighted), and the first candidate of lowest mean wins; the winner is
    then refitted on every row.

    ``train.segment_encoding`` (see :class:`SegmentEncoder`) is resolved on the segments
    of ``X``: ``auto`` is native up to :func:`native_level_limit` segments (the model's
    encoder stays ``auto``, so that a refit on more segments falls back to target_mean);
    beyond, the search tries ``target_mean`` and ``none`` with every candidate (the CV
    picks), or it is ``target_mean`` without the search. ``native`` beyond the limit of
    HistGradientBoosting raises :class:`ParamsError`. The report names the encoding used
    (``segment_encoding``, None without a segment column); ``best_params`` keeps the
    estimator's hyperparameters only.
    """
    categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    numeric = [c for c in X.columns if c not in categorical]
    model = LevelRatioRegressor(make_estimator(spec, categorical, numeric), level_feature, scale)
    levels = segment_levels(X)
    encoding, choices = segment_encoding_choices(spec, levels, spec.search.enabled)
    if len(choices) == 1:
        model.set_params(**{_ENCODING: choices[0]})
    if len(choices) > 1:
        logger.info(
            "segment encoding: %d segments, too many to keep them categorical "
            "(train.segment_encoding auto): the search chooses between %s",
            levels,
            " and ".join(choices),
        )
    elif encoding is not None:
        logger.info(
            "segment encoding: %s (%d segments, train.segment_encoding %s)",
            encoding,
            levels,
            spec.segment_encoding,
        )
    report: dict[str, Any] = {
        "estimator": spec.estimator,
        "segment_encoding": encoding,
        "segment_levels": levels,
        "search": None,
    }
    s = spec.search
    if not s.enabled:
        with threadpool_limits(limits=threads):
            model.fit(X, y)
        return model, report
    check_hyperparameters(spec.estimator, s.space, "train.search.space")
    grid = {f"{_INNER}{k}": v for k, v in s.space.items()}
    splits = time_folds(t, s.folds, s.fold_periods, calendar)
    candidates = search_candidates(grid, s.method, s.n_iter, spec.seed)
    if len(choices) > 1:  # the encoding: one more search dimension, inside each candidate
        candidates = [{**c, _ENCODING: e} for c in candidates for e in choices]
    tasks = [(i, j) for i in range(len(candidates)) for j in range(len(splits))]
    logger.info(
        "search: %s over %d candidate(s) x %d time-ordered folds = %d fits, "
        "%d process(es) of %d thread(s)",
        s.method,
        len(candidates),
        len(splits),
        len(tasks),
        s.n_jobs,
        threads,
    )
    fold_mae = np.empty((len(candidates), len(splits)))
    fold_pred: dict[tuple[int, int], np.ndarray] = {}
    progress = Progress("search", len(tasks), "fits", log=logger)
    with parallel_config(backend="loky", inner_max_num_threads=threads):
        done = Parallel(n_jobs=s.n_jobs, return_as="generator")(
            delayed(_fold_forecast)(model, candidates[i], X, y, *splits[j], threads)
            for i, j in tasks
        )
        for k, ((i, j), pred) in enumerate(zip(tasks, done, strict=True), start=1):
            fold_mae[i, j] = float(mean_absolute_error(y.iloc[splits[j][1]], pred))
            fold_pred[i, j] = pred
            progress.update(k)
    # as scikit-learn's cv_results_: unweighted mean and std over folds, rank "min" on ties
    mean = np.average(fold_mae, axis=1)
    std = np.sqrt(np.average((fold_mae - mean[:, np.newaxis]) ** 2, axis=1))
    from scipy.stats import rankdata  # here: scipy.stats costs about 1 s to import

    rank = rankdata(mean, method="min").astype(np.int32)
    best = int(rank.argmin())
    if fold_forecasts is not None:
        for j, (_, va) in enumerate(splits):
            fold_forecasts[va] = fold_pred[best, j]
    with threadpool_limits(limits=threads):
        final = clone(model).set_params(**candidates[best]).fit(X, y)
    report["search"] = {
        "method": s.method,
        "folds": [
            {
                "train_rows": int(len(tr)),
                "val_rows": int(len(va)),
                "val_first_t": int(t[va].min()),
                "val_last_t": int(t[va].max()),
            }
            for tr, va in splits
        ],
        "best_params": _short(candidates[best]),
        "best_cv_mae": float(mean[best]),
        "candidates": [
            {
                "params": _short(params),
                **({"segment_encoding": params[_ENCODING]} if _ENCODING in params else {}),
                "cv_mae": float(mean[i]),
                "cv_mae_std": float(std[i]),
                "rank": int(rank[i]),
            }
            for i, params in enumerate(candidates)
        ],
    }
    if len(choices) > 1:
        report["segment_encoding"] = candidates[best][_ENCODING]
        logger.info("segment encoding chosen by the search: %s", report["segment_encoding"])
    return final, report


#: Where the estimator's hyperparameters sit inside :class:`LevelRatioRegressor`.
_INNER = "regressor__estimator__"
#: The segment encoding of the model (a search dimension when ``auto`` has too many levels).
_ENCODING = "regressor__segment__encoding"


def segment_encoding_choices(
    spec: TrainSpec, levels: int, search: bool
) -> tuple[str | None, list[str]]:
    """``train.segment_encoding`` resolved for ``levels`` segments: the encoding used
    (None without segments; the first choice when the search picks) and the values to set
    on the model (none: keep the factory's; several: the search picks among them).

    Raises :class:`ParamsError` for ``native`` with more segments than the estimator takes.
    """
    if levels == 0:
        return None, []
    problem = native_level_problem(spec, levels, "in the training rows")
    if problem:
        raise ParamsError(f"params: {problem}.")
    if spec.segment_encoding != "auto":
        return spec.segment_encoding, []
    if levels <= (native_level_limit(spec) or MAX_NATIVE_LEVELS):
        return "native", []
    choices = ["target_mean", "none"] if search else ["target_mean"]
    return choices[0], choices


def search_candidates(grid: dict[str, list], method: str, n_iter: int, seed: int) -> list[dict]:
    """The candidates, in scikit-learn's order: the whole grid, or ``n_iter`` of it sampled
    without replacement with ``random_state=seed`` (as ``RandomizedSearchCV`` does)."""
    whole = ParameterGrid(grid)
    if method == "grid":
        return list(whole)
    return list(ParameterSampler(grid, min(n_iter, len(whole)), random_state=seed))


def _fold_forecast(
    model: LevelRatioRegressor,
    params: dict,
    X: pd.DataFrame,
    y: pd.Series,
    train: np.ndarray,
    val: np.ndarray,
    threads: int,
) -> np.ndarray:
    """Forecasts of fold ``val`` by a candidate fitted on fold ``train`` (runs in a
    worker)."""
    with threadpool_limits(limits=threads):
        fitted = clone(model).set_params(**params).fit(X.iloc[train], y.iloc[train])
        return np.asarray(fitted.predict(X.iloc[val]), dtype=np.float64)


def _short(params: dict) -> dict:
    """The estimator's hyperparameters of a candidate, by name (its encoding left out)."""
    return {k.split("__")[-1]: _plain(v) for k, v in params.items() if k != _ENCODING}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------- persistence

#: The only types a model file may contain beyond skops' defaults. Anything else is refused.
TRUSTED_TYPES: list[str] = [
    "panelcast.modelling.model.LevelRatioRegressor",
    "panelcast.modelling.model.SegmentEncoder",
    "sklearn.compose._column_transformer.make_column_selector",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "sklearn.compose._column_transformer._RemainderColsList",
    "sklearn.utils._bunch.Bunch",
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    # HistGradientBoosting's categorical preprocessor validates input with a partial of
    # check_array; skops still checks that the partial's function is itself trusted.
    "functools.partial",
    "sklearn.utils.validation.check_array",
]

_ID = re.compile(rb'("__id__": )(\d+)|"(\d+)(\.npy)"')


def _skops_io() -> Any:
    """``skops.io``, imported on first use: importing it imports every scikit-learn
    estimator module (about 1 s of CPU), which processes that only fit or check params
    (the backtest and its workers, check_params) need not pay."""
    import skops.io

    return skops.io


def dumps_model(model: Any) -> bytes:
    """Serialise with skops into byte-identical bytes for identical models.

    skops names zip entries and ``__id__`` fields after Python object ids and stamps
    each entry with the current time; both are renumbered in order of appearance and
    the zip is rewritten with a fixed timestamp.
    """
    raw = _skops_io().dumps(model)
    src = zipfile.ZipFile(io.BytesIO(raw))
    schema = src.read("schema.json")
    mapping: dict[bytes, bytes] = {}

    def renumber(match: re.Match[bytes]) -> bytes:
        old = match.group(2) or match.group(3)
        new = mapping.setdefault(old, str(len(mapping) + 1).encode())
        if match.group(2):
            return match.group(1) + new
        return b'"' + new + match.group(4) + b'"'

    schema = _ID.sub(renumber, schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        entries = []
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "schema.json":
                name, data = "schema.json", schema
            else:
                stem, _, suffix = info.filename.partition(".")
                if stem.encode() not in mapping:
                    raise RuntimeError(
                        f"skops entry {info.filename!r} is not referenced in the schema"
                    )
                name = mapping[stem.encode()].decode() + "." + suffix
            entries.append((name, data))
        for name, data in sorted(entries):
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, data)
    return out.getvalue()


class UntrustedModelError(ModelFileError):
    """A model file holds a type outside the trusted list."""


def loads_model(data: bytes, source: str = "<bytes>") -> Any:
    """Load a skops model, refusing any type outside :data:`TRUSTED_TYPES`."""
    try:
        sio = _skops_io()
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise ModelFileError(
            f"{source}: not a readable skops model file ({type(exc).__name__}: {exc}); "
            f"restore the last good one with `dvc checkout`."
        ) from None
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise UntrustedModelError(
            f"{source}: the model file holds type(s) outside the trusted list: {refused}; "
            f"refusing to load it."
        )
    try:
        return sio.loads(data, trusted=[t for t in untrusted if t in TRUSTED_TYPES])
    except Exception as exc:
        raise ModelFileError(
            f"{source}: the model file is corrupt ({type(exc).__name__}: {exc}); "
            f"restore the last good one with `dvc checkout`."
        ) from None


def load_model(path: str | Path, metadata: dict, metadata_name: str) -> Any:
    """Read a model file, check it is the one its metadata describes, and load it.

    ``metadata`` (read from ``metadata_name``) records the sha256 of the file the train
    stage wrote: a model file swapped for another one, even one made of trusted types, is
    refused before it is loaded. Errors name the file (:class:`ModelFileError`).
    """
    data = Path(path).read_bytes()
    recorded = metadata.get("sha256")
    digest = hashlib.sha256(data).hexdigest()
    if not isinstance(recorded, str):
        raise ModelFileError(
            f"{metadata_name}: no 'sha256' of the model file {path} (written by an older "
            f"version?); rerun `dvc repro` so that train records it."
        )
    if digest != recorded:
        raise ModelFileError(
            f"{path}: sha256 {digest[:16]}... does not match the 'sha256' {recorded[:16]}... "
            f"that {metadata_name} records for it: the model file was replaced or edited; "
            f"restore it with `dvc checkout {path}` or rerun `dvc repro`."
        )
    return loads_model(data, str(path))


def model_card(model: LevelRatioRegressor) -> dict:
    """Plain description of a fitted model for the metadata file."""
    inner = model.regressor_.named_steps["estimator"]
    params = {k: _plain(v) for k, v in inner.get_params().items() if _jsonable(v)}
    card = {"class": type(inner).__name__, "params": params, "scale": model.scale}
    encoder = model.regressor_.named_steps.get("segment")
    if isinstance(encoder, SegmentEncoder) and encoder.column in encoder.feature_names_in_:
        card["segment_encoding"] = encoder.encoding_
    return card


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(_plain(value))
        return True
    except TypeError:
        return False
