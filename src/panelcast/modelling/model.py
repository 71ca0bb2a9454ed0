"""The model: an estimator factory, a level-ratio target wrapper, time-ordered search,
and safe, byte-stable persistence with skops (never pickle)."""

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
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.compose import ColumnTransformer
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
from ..core.periods import Calendar
from ..core.progress import Progress

logger = logging.getLogger(__name__)

ESTIMATORS: dict[str, type[BaseEstimator]] = {
    "HistGradientBoostingRegressor": HistGradientBoostingRegressor,
    "RandomForestRegressor": RandomForestRegressor,
    "ExtraTreesRegressor": ExtraTreesRegressor,
    "Ridge": Ridge,
}
NATIVE_MISSING = {"HistGradientBoostingRegressor"}


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


def make_estimator(spec: TrainSpec, categorical: list[str], numeric: list[str]) -> Pipeline:
    """Return an **unfitted** pipeline for the estimator named in params."""
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
    if spec.estimator == "HistGradientBoostingRegressor":
        hyper.setdefault("categorical_features", "from_dtype")
        estimator = cls(**hyper)
        steps = [("estimator", estimator)]
    else:
        pre = ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
                ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
            ],
            verbose_feature_names_out=False,
        )
        steps = [("preprocess", pre), ("estimator", cls(**hyper))]
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
) -> tuple[LevelRatioRegressor, dict]:
    """Fit the model, with the time-ordered hyperparameter search when enabled.

    ``t`` holds the period index of each row (the folds are cut in it); ``calendar``
    (``problem.calendar``) names the periods in messages.

    The search scores every (candidate, fold) pair in ``spec.search.n_jobs`` processes,
    each with its thread pools pinned to ``threads`` (1 keeps the bytes of the model the
    same on any core count). Candidates, scores and the choice are those of scikit-learn's
    ``GridSearchCV`` / ``RandomizedSearchCV`` (``random_state=seed``) with the MAE: the mean
    over folds (unweighted), and the first candidate of lowest mean wins; the winner is
    then refitted on every row.
    """
    categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    numeric = [c for c in X.columns if c not in categorical]
    model = LevelRatioRegressor(make_estimator(spec, categorical, numeric), level_feature, scale)
    report: dict[str, Any] = {"estimator": spec.estimator, "search": None}
    s = spec.search
    if not s.enabled:
        with threadpool_limits(limits=threads):
            model.fit(X, y)
        return model, report
    check_hyperparameters(spec.estimator, s.space, "train.search.space")
    grid = {f"{_INNER}{k}": v for k, v in s.space.items()}
    splits = time_folds(t, s.folds, s.fold_periods, calendar)
    candidates = search_candidates(grid, s.method, s.n_iter, spec.seed)
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
    progress = Progress("search", len(tasks), "fits", log=logger)
    with parallel_config(backend="loky", inner_max_num_threads=threads):
        done = Parallel(n_jobs=s.n_jobs, return_as="generator")(
            delayed(_fold_mae)(model, candidates[i], X, y, *splits[j], threads) for i, j in tasks
        )
        for k, ((i, j), mae) in enumerate(zip(tasks, done, strict=True), start=1):
            fold_mae[i, j] = mae
            progress.update(k)
    # as scikit-learn's cv_results_: unweighted mean and std over folds, rank "min" on ties
    mean = np.average(fold_mae, axis=1)
    std = np.sqrt(np.average((fold_mae - mean[:, np.newaxis]) ** 2, axis=1))
    from scipy.stats import rankdata  # here: scipy.stats costs about 1 s to import

    rank = rankdata(mean, method="min").astype(np.int32)
    best = int(rank.argmin())
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
                "cv_mae": float(mean[i]),
                "cv_mae_std": float(std[i]),
                "rank": int(rank[i]),
            }
            for i, params in enumerate(candidates)
        ],
    }
    return final, report


#: Where the estimator's hyperparameters sit inside :class:`LevelRatioRegressor`.
_INNER = "regressor__estimator__"


def search_candidates(grid: dict[str, list], method: str, n_iter: int, seed: int) -> list[dict]:
    """The candidates, in scikit-learn's order: the whole grid, or ``n_iter`` of it sampled
    without replacement with ``random_state=seed`` (as ``RandomizedSearchCV`` does)."""
    whole = ParameterGrid(grid)
    if method == "grid":
        return list(whole)
    return list(ParameterSampler(grid, min(n_iter, len(whole)), random_state=seed))


def _fold_mae(
    model: LevelRatioRegressor,
    params: dict,
    X: pd.DataFrame,
    y: pd.Series,
    train: np.ndarray,
    val: np.ndarray,
    threads: int,
) -> float:
    """MAE on fold ``val`` of a candidate fitted on fold ``train`` (runs in a worker)."""
    with threadpool_limits(limits=threads):
        fitted = clone(model).set_params(**params).fit(X.iloc[train], y.iloc[train])
        return float(mean_absolute_error(y.iloc[val], fitted.predict(X.iloc[val])))


def _short(params: dict) -> dict:
    return {k.split("__")[-1]: _plain(v) for k, v in params.items()}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------- persistence

#: The only types a model file may contain beyond skops' defaults. Anything else is refused.
TRUSTED_TYPES: list[str] = [
    "panelcast.modelling.model.LevelRatioRegressor",
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
    return {"class": type(inner).__name__, "params": params, "scale": model.scale}


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(_plain(value))
        return True
    except TypeError:
        return False
