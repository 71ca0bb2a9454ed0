"""Strict, typed configuration built from ``params.yaml``.

Every section of ``params.yaml`` maps to a frozen dataclass. Loading is strict:
an unknown or misspelled key, a missing key or a value of the wrong type raises
:class:`ParamsError` naming the key path (``train.search.folds``), what was
expected and what was found. Nothing falls back to a silent default.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ParamsError
from .periods import parse_period

logger = logging.getLogger(__name__)

Month = str  # "YYYY-MM"


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class TimeSpec:
    """How the monthly time index is read from the table."""

    year_column: str
    month_column: str


@dataclass(frozen=True)
class ProblemSpec:
    """The business question written as an ML specification."""

    question: str
    segment: str
    time: TimeSpec
    target: str
    horizon_months: int
    metric: Literal["mae", "rmse", "wape"]
    success: str


@dataclass(frozen=True)
class SourceSpec:
    """Where the raw data comes from, and what we know about it."""

    uri: str
    format: Literal["csv", "parquet", "auto"]
    name: str
    licence: str


@dataclass(frozen=True)
class PathsSpec:
    """Every file the pipeline reads or writes, named once (``dvc.yaml`` uses ``${paths.*}``)."""

    contract: str
    snapshot: str
    validated: str
    features: str
    baseline: str
    predictions: str
    model: str
    model_metadata: str
    reference: str
    metrics: str
    plots: str

    def metric(self, stage: str) -> Path:
        """The metrics file of ``stage``: ``<paths.metrics>/<stage>.json``."""
        return Path(self.metrics) / f"{stage}.json"

    def plot(self, name: str) -> Path:
        """A plot data file: ``<paths.plots>/<name>``."""
        return Path(self.plots) / name


@dataclass(frozen=True)
class WindowSpec:
    """The only split is in time: a training window, then a test window (months)."""

    train_start: Month
    train_end: Month
    test_start: Month
    test_end: Month


@dataclass(frozen=True)
class FeatureSpec:
    """Past-only features computed per segment."""

    lags: list[int]
    rolling: list[int]
    level_window: int
    exogenous: list[str]
    scale: Literal["log_ratio", "none"]
    calendar: bool
    segment_feature: bool


@dataclass(frozen=True)
class BaselineSpec:
    """Rule-based benchmarks scored exactly like the model."""

    rules: list[Literal["seasonal_naive", "last_value", "segment_month_mean", "drift_naive"]]


@dataclass(frozen=True)
class SearchSpec:
    """Hyperparameter search on time-ordered folds inside the training window."""

    enabled: bool
    method: Literal["grid", "random"]
    n_iter: int
    folds: int
    fold_months: int
    n_jobs: int
    space: dict[str, list[Any]]


@dataclass(frozen=True)
class TrainSpec:
    """The estimator, its hyperparameters and the search."""

    estimator: str
    hyperparameters: dict[str, Any]
    seed: int
    search: SearchSpec


@dataclass(frozen=True)
class GateSpec:
    """The success criteria: a model below them is refused."""

    max_wape: float
    min_gain_pct: float


@dataclass(frozen=True)
class EvaluateSpec:
    gate: GateSpec
    fail_on_gate: bool


@dataclass(frozen=True)
class DriftSpec:
    """Monitoring: the current window compared with the training reference."""

    current_start: Month
    current_end: Month
    numeric_effect: float
    categorical_effect: float
    missing_effect: float
    alpha: float
    dataset_share: float
    key_columns: list[str]


@dataclass(frozen=True)
class PolicySpec:
    """A retraining policy replayed by the backtest."""

    name: str
    kind: Literal["never", "every", "on_alarm"]
    every_months: int = 0


@dataclass(frozen=True)
class BacktestSpec:
    """Production replayed month by month from a first training window to the end of the data."""

    first_train_start: Month
    first_train_end: Month
    end: Month
    policies: list[PolicySpec]
    validation_months: int
    drift_window_months: int
    error_window_months: int
    error_factor: float
    min_months_between: int
    crisis_start: Month
    crisis_end: Month
    n_jobs: int


@dataclass(frozen=True)
class ComputeSpec:
    """How much of the machine one process uses; parallelism comes from processes."""

    threads: int


@dataclass(frozen=True)
class RetrainSpec:
    """On-demand retraining: how the windows move when drift says retrain."""

    test_months: int
    experiment_prefix: str


@dataclass(frozen=True)
class Params:
    """The whole of ``params.yaml``."""

    problem: ProblemSpec
    source: SourceSpec
    paths: PathsSpec
    windows: WindowSpec
    features: FeatureSpec
    baseline: BaselineSpec
    train: TrainSpec
    evaluate: EvaluateSpec
    drift: DriftSpec
    backtest: BacktestSpec
    retrain: RetrainSpec
    compute: ComputeSpec


# --------------------------------------------------------------------------- strict parsing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return the converted value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build_strict(tp, value, key)
    if tp is Any:
        return value
    if tp is type(None):
        if value is not None:
            raise ParamsError(f"params key '{key}' must be empty (null), got {value!r}.")
        return None
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"params key '{key}' must be one of {list(args)}, got {value!r}.")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _check(value, option, key)
            except ParamsError as exc:
                errors.append(str(exc))
        raise ParamsError(f"params key '{key}' has no valid form: {'; '.join(errors)}")
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(
                f"params key '{key}' must be a list, got {type(value).__name__} {value!r}."
            )
        return [_check(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ParamsError(
                f"params key '{key}' must be a mapping, got {type(value).__name__} {value!r}."
            )
        return {str(k): _check(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(
                f"params key '{key}' must be a number, got {type(value).__name__} {value!r}."
            )
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(
                f"params key '{key}' must be an integer, got {type(value).__name__} {value!r}."
            )
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(
                f"params key '{key}' must be true or false, got {type(value).__name__} {value!r}."
            )
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(
                f"params key '{key}' must be a string, got {type(value).__name__} {value!r}."
            )
        return value
    raise TypeError(f"unsupported annotation {_type_name(tp)} for '{key}'")  # pragma: no cover


def build_strict(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown and missing keys are errors."""
    where = prefix or "params"
    if not isinstance(data, Mapping):
        raise ParamsError(
            f"params section '{where}' must be a mapping, got {type(data).__name__} {data!r}."
        )
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ParamsError(
            f"unknown params key(s) {[_join(prefix, k) for k in unknown]} in '{where}'; "
            f"expected only {sorted(names)}."
        )
    missing = [
        f.name
        for f in fields
        if f.name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ParamsError(
            f"missing params key(s) {[_join(prefix, k) for k in missing]} in '{where}'."
        )
    kwargs = {
        f.name: _check(data[f.name], hints[f.name], _join(prefix, f.name))
        for f in fields
        if f.name in data
    }
    return cls(**kwargs)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def parse_month(value: str, key: str) -> int:
    """Period index of ``value``; a :class:`ParamsError` naming ``key`` when malformed."""
    try:
        return parse_period(value)
    except ValueError as exc:
        raise ParamsError(f"params key '{key}': {exc}.") from None


def _semantic_checks(p: Params) -> None:
    """Cross-key rules that types alone cannot express."""
    w = p.windows
    ts, te = (
        parse_month(w.train_start, "windows.train_start"),
        parse_month(w.train_end, "windows.train_end"),
    )
    vs, ve = (
        parse_month(w.test_start, "windows.test_start"),
        parse_month(w.test_end, "windows.test_end"),
    )
    if te < ts:
        raise ParamsError(
            f"params 'windows': the training window is empty: train_end {w.train_end} "
            f"is before train_start {w.train_start}."
        )
    if ve < vs:
        raise ParamsError(
            f"params 'windows': the test window is empty: test_end {w.test_end} "
            f"is before test_start {w.test_start}."
        )
    if vs <= te:
        raise ParamsError(
            f"params 'windows': the test window must start after the training window; "
            f"test_start {w.test_start} <= train_end {w.train_end}."
        )
    cs, ce = (
        parse_month(p.drift.current_start, "drift.current_start"),
        parse_month(p.drift.current_end, "drift.current_end"),
    )
    if ce < cs:
        raise ParamsError(
            f"params 'drift': current_end {p.drift.current_end} is before "
            f"current_start {p.drift.current_start}."
        )
    f = p.features
    for key, values in (("features.lags", f.lags), ("features.rolling", f.rolling)):
        bad = [v for v in values if v < 1]
        if bad:
            raise ParamsError(f"params key '{key}' must hold integers >= 1, got {bad}.")
    if f.level_window < 1:
        raise ParamsError(f"params key 'features.level_window' must be >= 1, got {f.level_window}.")
    if p.problem.horizon_months != 1:
        raise ParamsError(
            f"params key 'problem.horizon_months' must be 1 (one-step-ahead forecasting is "
            f"what this pipeline implements), got {p.problem.horizon_months}."
        )
    s = p.train.search
    if s.folds < 1 or s.fold_months < 1:
        raise ParamsError(
            f"params keys 'train.search.folds' and 'train.search.fold_months' must be >= 1, "
            f"got {s.folds} and {s.fold_months}."
        )
    b = p.backtest
    bs = parse_month(b.first_train_start, "backtest.first_train_start")
    be = parse_month(b.first_train_end, "backtest.first_train_end")
    bend = parse_month(b.end, "backtest.end")
    if not bs < be < bend:
        raise ParamsError(
            f"params 'backtest': expected first_train_start < first_train_end < end, got "
            f"{b.first_train_start}, {b.first_train_end}, {b.end}."
        )
    names = [pol.name for pol in b.policies]
    if not names or len(set(names)) != len(names):
        raise ParamsError(f"params key 'backtest.policies' needs unique names, got {names}.")
    for i, pol in enumerate(b.policies):
        if pol.kind == "every" and pol.every_months < 1:
            raise ParamsError(
                f"params key 'backtest.policies[{i}].every_months' must be >= 1 for kind "
                f"'every', got {pol.every_months}."
            )
    for key in ("validation_months", "drift_window_months", "error_window_months"):
        if getattr(b, key) < 1:
            raise ParamsError(f"params key 'backtest.{key}' must be >= 1, got {getattr(b, key)}.")
    if p.retrain.test_months < 1:
        raise ParamsError(
            f"params key 'retrain.test_months' must be >= 1, got {p.retrain.test_months}."
        )
    if not 0 < p.drift.alpha < 1:
        raise ParamsError(f"params key 'drift.alpha' must be in (0, 1), got {p.drift.alpha}.")


def params_from_dict(data: Mapping[str, Any]) -> Params:
    """Validate a parsed ``params.yaml`` mapping into :class:`Params`."""
    params = build_strict(Params, data, "")
    _semantic_checks(params)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; errors name the file and the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"params file {str(path)!r} not found.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"params file {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        raise ParamsError(f"params file {str(path)!r} is empty.")
    try:
        return params_from_dict(data)
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None
