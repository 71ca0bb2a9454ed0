"""Strict, typed configuration built from ``params.yaml``.

Every section of ``params.yaml`` maps to a frozen pydantic model that forbids unknown
keys and coerces nothing (the string ``"fast"`` is not a number, ``true`` is not an
integer; an integer is accepted where a number is expected). Each field carries its
constraint next to it (``Field(gt=0)``, ``Literal[...]``); rules that tie several keys
together are model validators. NaN and infinities are refused everywhere.

Loading collects every problem at once and raises one :class:`ParamsError` whose message
is one line: the file, then each problem as ``'key.path' what is allowed, got <value>``,
joined with ``"; "``. The YAML itself is read without duplicate keys or anchors/aliases.

The strict base model, the error formatting and the strict YAML reader are shared with
the data contract (:mod:`panelcast.data.contract`), whose errors name its own file.
"""

from __future__ import annotations

import logging
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from .errors import ParamsError, UserError
from .periods import parse_period

__all__ = [
    "BacktestSpec",
    "BaselineSpec",
    "ComputeSpec",
    "DriftSpec",
    "Estimator",
    "EvaluateSpec",
    "FeatureSpec",
    "GateSpec",
    "Month",
    "Params",
    "ParamsError",
    "PathsSpec",
    "PredictSpec",
    "ServeSpec",
    "PolicySpec",
    "ProblemSpec",
    "RetrainSpec",
    "SearchSpec",
    "SourceSpec",
    "StrictModel",
    "TimeSpec",
    "TrainSpec",
    "WindowSpec",
    "describe_validation_error",
    "key_path",
    "load_params",
    "load_yaml_strict",
    "read_yaml_file",
    "params_from_dict",
    "parse_month",
    "rule_error",
    "show_value",
]

logger = logging.getLogger(__name__)

#: Longest echo of an offending value in a message.
MAX_SHOWN = 80


# --------------------------------------------------------------------------- strict base


class StrictModel(BaseModel):
    """A frozen model that forbids unknown keys and coerces nothing.

    Fields may also be given by position, in declaration order (``WindowSpec("2000-01",
    ...)``), as the former dataclasses allowed.
    """

    model_config = ConfigDict(
        strict=True, frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args:
            names = list(type(self).model_fields)
            if len(args) > len(names):
                raise TypeError(
                    f"{type(self).__name__} takes at most {len(names)} positional "
                    f"arguments ({', '.join(names)}), got {len(args)}."
                )
            for name, value in zip(names, args, strict=False):
                if name in kwargs:
                    raise TypeError(f"{type(self).__name__} got {name!r} twice.")
                kwargs[name] = value
        super().__init__(**kwargs)


def rule_error(field: str | tuple[str | int, ...], message: str, value: Any) -> Exception:
    """A cross-field problem reported on ``field`` of the model that raises it."""
    parts = (field,) if isinstance(field, str) else tuple(field)
    return PydanticCustomError(
        "rule", "{message}", {"message": message, "field": parts, "value": value}
    )


# --------------------------------------------------------------------------- field types


def _month(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("month", "must be a month 'YYYY-MM' written as text")
    try:
        parse_period(value)
    except ValueError as exc:
        detail = str(exc)
        if detail.startswith("month "):  # the form is right, the month is not
            raise PydanticCustomError(
                "month", "must be a month 'YYYY-MM' ({detail})", {"detail": detail.split(" in ")[0]}
            ) from None
        raise PydanticCustomError("month", "must be a month 'YYYY-MM'") from None
    return value


def _n_jobs(value: int) -> int:
    if value < 1 and value != -1:
        raise PydanticCustomError("n_jobs", "must be >= 1 (processes), or -1 for one per core")
    return value


def _one_step(value: int) -> int:
    if value != 1:
        raise PydanticCustomError(
            "horizon",
            "must be 1 (one-step-ahead forecasting is what this pipeline implements)",
        )
    return value


#: A month ``"YYYY-MM"``, checked with :func:`panelcast.core.periods.parse_period`.
Month = Annotated[str, PlainValidator(_month, json_schema_input_type=str)]
#: A non-empty name (a column, a file, a policy).
Name = Annotated[str, Field(min_length=1)]
#: An integer >= 1.
Positive = Annotated[int, Field(ge=1)]
#: Processes for joblib: >= 1, or -1 for one per core.
NJobs = Annotated[int, AfterValidator(_n_jobs)]
#: The estimators the model factory knows (``panelcast.modelling.model.ESTIMATORS``; a unit
#: test keeps both lists equal, since core may not import the modelling package).
Estimator = Literal[
    "HistGradientBoostingRegressor", "RandomForestRegressor", "ExtraTreesRegressor", "Ridge"
]
Rule = Literal["seasonal_naive", "last_value", "segment_month_mean", "drift_naive"]


# --------------------------------------------------------------------------- sections


class TimeSpec(StrictModel):
    """How the monthly time index is read from the table."""

    year_column: Name
    month_column: Name

    @model_validator(mode="after")
    def _distinct(self) -> TimeSpec:
        if self.year_column == self.month_column:
            raise rule_error(
                "month_column",
                f"must differ from year_column {self.year_column!r}",
                self.month_column,
            )
        return self


class ProblemSpec(StrictModel):
    """The business question written as an ML specification."""

    question: Name
    segment: Name
    time: TimeSpec
    target: Name
    horizon_months: Annotated[int, AfterValidator(_one_step)]
    metric: Literal["mae", "rmse", "wape"]
    success: Name

    @model_validator(mode="after")
    def _distinct_columns(self) -> ProblemSpec:
        used = {
            self.time.year_column: "time.year_column",
            self.time.month_column: "time.month_column",
        }
        for key in ("segment", "target"):
            value = getattr(self, key)
            if value in used:
                raise rule_error(key, f"must be a column other than {used[value]}", value)
            used[value] = key
        return self


class SourceSpec(StrictModel):
    """Where the raw data comes from, and what we know about it."""

    uri: Name
    #: what DVC watches to rerun collect when the data changes (dvc.yaml: collect's deps);
    #: check_params requires the value :func:`panelcast.data.sources.watch_target` gives
    watch: Name
    format: Literal["csv", "parquet", "auto"]
    name: Name
    licence: Name
    #: seconds to connect, and at most between two reads, of a remote source
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    #: seconds the whole transfer (download, copy, decompression) may take
    max_seconds: float = Field(default=600.0, gt=0, le=86400)
    #: the largest source accepted, in bytes (for .gz, the decompressed size too)
    max_bytes: int = Field(default=4 * 2**30, ge=1)
    #: a CSV must end with a newline (a missing one may mean a truncated last line)
    require_final_newline: bool = True


class PathsSpec(StrictModel):
    """Every file the pipeline reads or writes, named once (``dvc.yaml`` uses ``${paths.*}``)."""

    contract: Name
    snapshot: Name
    validated: Name
    features: Name
    baseline: Name
    predictions: Name
    model: Name
    model_metadata: Name
    reference: Name
    deployed_model: Name
    deployed_metadata: Name
    serving_state: Name
    forecasts: Name
    metrics: Name
    plots: Name

    def metric(self, stage: str) -> Path:
        """The metrics file of ``stage``: ``<paths.metrics>/<stage>.json``."""
        return Path(self.metrics) / f"{stage}.json"

    def plot(self, name: str) -> Path:
        """A plot data file: ``<paths.plots>/<name>``."""
        return Path(self.plots) / name


class WindowSpec(StrictModel):
    """The only split is in time: a training window, then a test window (months)."""

    train_start: Month
    train_end: Month
    test_start: Month
    test_end: Month

    @model_validator(mode="after")
    def _ordered(self) -> WindowSpec:
        ts, te = parse_period(self.train_start), parse_period(self.train_end)
        vs, ve = parse_period(self.test_start), parse_period(self.test_end)
        if te < ts:
            raise rule_error(
                "train_end",
                f"must not be before train_start (the training window is empty: train_end "
                f"{self.train_end} is before train_start {self.train_start})",
                self.train_end,
            )
        if ve < vs:
            raise rule_error(
                "test_end",
                f"must not be before test_start (the test window is empty: test_end "
                f"{self.test_end} is before test_start {self.test_start})",
                self.test_end,
            )
        if vs <= te:
            raise rule_error(
                "test_start",
                f"must be after train_end (the test window must start after the training "
                f"window: test_start {self.test_start} is not after train_end {self.train_end})",
                self.test_start,
            )
        return self


class FeatureSpec(StrictModel):
    """Past-only features computed per segment."""

    lags: list[Positive] = Field(min_length=1)
    rolling: list[Positive]
    level_window: Positive
    exogenous: list[Name]
    scale: Literal["log_ratio", "none"]
    calendar: bool
    segment_feature: bool


class BaselineSpec(StrictModel):
    """Rule-based benchmarks scored exactly like the model."""

    rules: list[Rule] = Field(min_length=1)


class SearchSpec(StrictModel):
    """Hyperparameter search on time-ordered folds inside the training window.

    ``space`` values are checked against the estimator by the check_params stage.
    """

    enabled: bool
    method: Literal["grid", "random"]
    n_iter: Positive
    folds: Positive
    fold_months: Positive
    n_jobs: NJobs
    space: dict[str, Annotated[list[Any], Field(min_length=1)]]


class TrainSpec(StrictModel):
    """The estimator, its hyperparameters and the search.

    ``hyperparameters`` are checked against the estimator's own constraints by the
    check_params stage (:mod:`panelcast.pipeline.check_params`).
    """

    estimator: Estimator
    hyperparameters: dict[str, Any]
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)]
    search: SearchSpec


class GateSpec(StrictModel):
    """The success criteria: a model below them is refused."""

    max_wape: float = Field(gt=0)
    min_gain_pct: float


class EvaluateSpec(StrictModel):
    gate: GateSpec
    fail_on_gate: bool


class DriftSpec(StrictModel):
    """Monitoring: the current window compared with the training reference.

    ``key_columns`` are checked against the monitored columns by the check_params stage.
    """

    current_start: Month
    current_end: Month
    numeric_effect: float = Field(gt=0)
    categorical_effect: float = Field(gt=0, le=1)
    missing_effect: float = Field(gt=0, le=1)
    alpha: float = Field(gt=0, lt=1)
    dataset_share: float = Field(gt=0, le=1)
    key_columns: list[Name] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> DriftSpec:
        if parse_period(self.current_end) < parse_period(self.current_start):
            raise rule_error(
                "current_end",
                f"must not be before current_start {self.current_start} (the drift window "
                f"is empty)",
                self.current_end,
            )
        return self


class PolicySpec(StrictModel):
    """A retraining policy replayed by the backtest."""

    name: Name
    kind: Literal["never", "every", "on_alarm"]
    every_months: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _every(self) -> PolicySpec:
        if self.kind == "every" and self.every_months < 1:
            raise rule_error("every_months", "must be >= 1 for kind 'every'", self.every_months)
        return self


class BacktestSpec(StrictModel):
    """Production replayed month by month from a first training window to the end of the data."""

    first_train_start: Month
    first_train_end: Month
    end: Month
    policies: list[PolicySpec] = Field(min_length=1)
    validation_months: Positive
    drift_window_months: Positive
    error_window_months: Positive
    error_factor: float = Field(gt=0)
    min_months_between: Annotated[int, Field(ge=0)]
    crisis_start: Month
    crisis_end: Month
    n_jobs: NJobs

    @model_validator(mode="after")
    def _ordered(self) -> BacktestSpec:
        start, first_end = parse_period(self.first_train_start), parse_period(self.first_train_end)
        if not start < first_end:
            raise rule_error(
                "first_train_end",
                f"must be after first_train_start {self.first_train_start}",
                self.first_train_end,
            )
        if not first_end < parse_period(self.end):
            raise rule_error(
                "end", f"must be after first_train_end {self.first_train_end}", self.end
            )
        if parse_period(self.crisis_end) < parse_period(self.crisis_start):
            raise rule_error(
                "crisis_end",
                f"must not be before crisis_start {self.crisis_start}",
                self.crisis_end,
            )
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> BacktestSpec:
        seen: set[str] = set()
        for i, policy in enumerate(self.policies):
            if policy.name in seen:
                raise rule_error(
                    ("policies", i, "name"),
                    f"must be unique among the policies {[p.name for p in self.policies]}",
                    policy.name,
                )
            seen.add(policy.name)
        return self


class PredictSpec(StrictModel):
    """Forecasts of the periods after the data, with calibrated prediction intervals."""

    # all: the deployed model is refit on every labelled period; train_window: the
    # evaluated model itself is deployed
    refit: Literal["all", "train_window"]
    # nominal coverage of each prediction interval, in percent
    interval_levels: list[Annotated[int, Field(ge=1, le=99)]] = Field(min_length=1)
    # months at the end of the training window whose one-step residuals calibrate the
    # intervals (split-conformal: a model fitted before them forecasts them)
    calibration_months: Positive

    @model_validator(mode="after")
    def _unique_levels(self) -> PredictSpec:
        if len(set(self.interval_levels)) != len(self.interval_levels):
            raise rule_error("interval_levels", "must not repeat a level", self.interval_levels)
        return self


class ServeSpec(StrictModel):
    """The HTTP service: request limits and micro-batching of concurrent requests."""

    max_rows: Positive  # rows in one request body; more is refused with 413
    batch_window_ms: float = Field(ge=0, le=1000)  # wait this long to batch requests ...
    batch_max_rows: Positive  # ... or until this many forecast rows are waiting


class ComputeSpec(StrictModel):
    """How much of the machine one process uses; parallelism comes from processes."""

    threads: Positive


class RetrainSpec(StrictModel):
    """On-demand retraining: how the windows move when drift says retrain."""

    test_months: Positive
    # part of a DVC experiment name, hence of a git ref
    experiment_prefix: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class Params(StrictModel):
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
    predict: PredictSpec
    serve: ServeSpec
    compute: ComputeSpec


# --------------------------------------------------------------------------- messages


def show_value(value: Any) -> str:
    """``repr`` of an offending value, cut to :data:`MAX_SHOWN` characters."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def key_path(loc: tuple[Any, ...]) -> str:
    """``('backtest', 'policies', 1, 'every_months')`` -> ``backtest.policies[1].every_months``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("["):  # pydantic's tag for a mapping key, e.g. '[key]'
            out += f" {part}"
        else:
            out += f".{part}" if out else str(part)
    return out


def _unwrap(tp: Any, meta: list[Any]) -> Any:
    """Strip ``Annotated`` and ``X | None`` from ``tp``, collecting constraints into ``meta``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp, *extra = typing.get_args(tp)
            meta.extend(extra)
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(options) != 1:
                return tp
            tp = options[0]
        else:
            return tp


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[Any, list[Any]]:
    """The annotation at ``loc`` under ``root`` and its constraints (None when unknown)."""
    tp: Any = root
    meta: list[Any] = []
    for part in loc:
        tp = _unwrap(tp, [])
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            field = tp.model_fields.get(part)
            if field is None:
                return None, []
            tp, meta = field.annotation, list(field.metadata)
        elif origin is list and isinstance(part, int):
            tp, meta = typing.get_args(tp)[0], []
        elif origin is dict and isinstance(part, str):
            tp, meta = typing.get_args(tp)[1], []
        else:
            return None, []
    tp = _unwrap(tp, meta)
    flat: list[Any] = []
    for item in meta:
        flat.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    return tp, flat


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _range(meta: list[Any]) -> str | None:
    """``in (0, 1]`` style text when a field has both a lower and an upper bound."""
    low = high = None
    for item in meta:
        if isinstance(item, annotated_types.Gt):
            low = f"({_num(item.gt)}"
        elif isinstance(item, annotated_types.Ge):
            low = f"[{_num(item.ge)}"
        elif isinstance(item, annotated_types.Lt):
            high = f"{_num(item.lt)})"
        elif isinstance(item, annotated_types.Le):
            high = f"{_num(item.le)}]"
    return f"must be in {low}, {high}" if low and high else None


_BOUNDS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}
_KINDS = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number (not NaN or infinite)",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "none_required": "must be empty (null)",
}


def _problem(err: Any, root: type[BaseModel], noun: str) -> str:
    kind, loc, ctx = err["type"], tuple(err["loc"]), err.get("ctx") or {}
    value = err.get("input")
    if kind == "rule":  # a cross-field rule: report it on the key it names
        loc, value = loc + tuple(ctx["field"]), ctx.get("value")
    path = key_path(loc) or noun
    section = key_path(loc[:-1])
    if kind == "extra_forbidden":
        model, _ = _walk(root, loc[:-1])
        allowed = list(model.model_fields) if isinstance(model, type) else []
        where = f"of '{section}'" if section else "at the top level"
        return (
            f"unknown {noun} key '{path}' (allowed keys {where}: {', '.join(allowed)}), "
            f"got {show_value(value)}"
        )
    if kind == "missing":
        where = f"in '{section}'" if section else "at the top level"
        return f"missing {noun} key '{path}' (required {where})"
    if kind in _BOUNDS:
        _, meta = _walk(root, loc)
        symbol, name = _BOUNDS[kind]
        what = _range(meta) or f"must be {symbol} {_num(ctx.get(name))}"
    elif kind == "literal_error":
        what = f"must be one of {ctx.get('expected')}"
    elif kind == "too_short":
        what = f"must hold at least {ctx.get('min_length')} item(s)"
    elif kind == "too_long":
        what = f"must hold at most {ctx.get('max_length')} item(s)"
    elif kind == "string_too_short":
        what = "must not be empty"
    elif kind == "string_pattern_mismatch":
        what = f"must match {ctx.get('pattern')}"
    elif kind in _KINDS:
        what = _KINDS[kind]
    else:
        what = str(err["msg"]).removeprefix("Value error, ")
    return f"'{path}' {what}, got {show_value(value)}"


def describe_validation_error(exc: ValidationError, root: type[BaseModel], noun: str) -> str:
    """Every problem of ``exc`` as ``'key.path' what is allowed, got <value>``, joined by "; "."""
    problems = list(dict.fromkeys(_problem(err, root, noun) for err in exc.errors()))
    return "; ".join(p.replace("\n", " ") for p in problems)


# --------------------------------------------------------------------------- strict YAML


class _NoAliasLoader(yaml.SafeLoader):
    """A safe loader that refuses anchors and aliases (no alias bombs, no merge keys)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            kind = "alias" if isinstance(event, yaml.AliasEvent) else "anchor"
            sign = "*" if kind == "alias" else "&"
            raise _YamlProblem(
                f"line {event.start_mark.line + 1}: YAML {kind} '{sign}{anchor}' is not "
                f"allowed (anchors and aliases are refused; write the value out)"
            )
        return super().compose_node(parent, index)


class _YamlProblem(Exception):
    pass


def _duplicates(node: Any, loc: tuple[Any, ...]) -> None:
    """Refuse a key given twice in one mapping (PyYAML would silently keep the last)."""
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], str] = {}
        for key_node, value_node in node.value:
            key = (key_node.tag, str(key_node.value))
            mark = key_node.start_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}"
            if key in first:
                raise _YamlProblem(
                    f"{where}: duplicate key '{key_path(loc + (key_node.value,))}' "
                    f"(first given at {first[key]})"
                )
            first[key] = where
            _duplicates(value_node, loc + (str(key_node.value),))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicates(item, loc + (i,))


def load_yaml_strict(text: str, source: str, error: type[UserError] = ParamsError) -> Any:
    """Parse ``text`` with a safe loader refusing duplicate keys and anchors/aliases.

    Errors are raised as ``error`` naming ``source`` and the line, on one line.
    """
    loader = _NoAliasLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _duplicates(node, ())
        return loader.construct_document(node)
    except _YamlProblem as exc:
        raise error(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).replace('"<unicode string>"', source).split())
        raise error(f"{source}: not valid YAML: {detail[:300]}") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise error(f"{source}: a value cannot be read: {str(exc)[:200]}") from None
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- loading


def parse_month(value: str, key: str) -> int:
    """Period index of ``value``; a :class:`ParamsError` naming ``key`` when malformed."""
    try:
        return parse_period(value)
    except ValueError as exc:
        raise ParamsError(f"params key '{key}': {exc}.") from None


def params_from_dict(data: Any, source: str = "params") -> Params:
    """Validate a parsed ``params.yaml`` mapping into :class:`Params`.

    Raises one :class:`ParamsError` naming ``source`` and every problem found.
    """
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(f"{source}: {describe_validation_error(exc, Params, 'params')}") from None


def read_yaml_file(path: str | Path, what: str, error: type[UserError]) -> Any:
    """Read a YAML file strictly (:func:`load_yaml_strict`); ``error`` names ``what`` and it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} not found.") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    data = load_yaml_strict(text, str(path), error)
    if data is None:
        raise error(f"{what} {str(path)!r} is empty.")
    return data


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; errors name the file and the key."""
    return params_from_dict(read_yaml_file(path, "params file", ParamsError), str(path))
