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

import contextlib
import contextvars
import datetime as dt
import logging
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import annotated_types
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from .errors import ParamsError, UserError
from .periods import FREQUENCIES, MONTHLY, SINGLE_SERIES, Calendar

__all__ = [
    "BacktestSpec",
    "BaselineSpec",
    "ComputeSpec",
    "DriftSpec",
    "Estimator",
    "EvaluateSpec",
    "FeatureSpec",
    "GateSpec",
    "NamedPeriod",
    "Period",
    "PrepareSpec",
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
    "active_calendar",
    "reading_periods_as",
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


#: The calendar of the params being validated. A context variable, not pydantic's validation
#: context: models with a custom ``__init__`` (positional fields, see :class:`StrictModel`)
#: do not pass the validation context on to their fields.
_CALENDAR: contextvars.ContextVar[Calendar | None] = contextvars.ContextVar(
    "panelcast_calendar", default=None
)


@contextlib.contextmanager
def reading_periods_as(calendar: Calendar) -> Iterator[None]:
    """Validate period fields in ``calendar`` within the block (monthly otherwise)."""
    token = _CALENDAR.set(calendar)
    try:
        yield
    finally:
        _CALENDAR.reset(token)


def active_calendar() -> Calendar:
    """The calendar of the params being validated (:func:`reading_periods_as`; monthly
    when none is set)."""
    return _CALENDAR.get() or MONTHLY


def _period(value: Any) -> str:
    cal = active_calendar()
    if isinstance(value, bool) or not isinstance(value, (str, int, dt.date)):
        raise PydanticCustomError(
            "period", "must be a {unit} {form}", {"unit": cal.unit, "form": cal.form}
        )
    try:
        index = cal.parse(value)
    except ValueError as exc:
        if str(exc).startswith("expected "):  # the form is wrong: the value is shown anyway
            raise PydanticCustomError(
                "period", "must be a {unit} {form}", {"unit": cal.unit, "form": cal.form}
            ) from None
        raise PydanticCustomError(
            "period",
            "must be a {unit} {form} ({detail})",
            {"unit": cal.unit, "form": cal.form, "detail": str(exc)},
        ) from None
    return cal.format(index)


def _n_jobs(value: int) -> int:
    if value < 1 and value != -1:
        raise PydanticCustomError("n_jobs", "must be >= 1 (processes), or -1 for one per core")
    return value


def _one_step(value: int) -> int:
    if value != 1:
        raise PydanticCustomError(
            "horizon",
            "must be 1 period (one-step-ahead forecasting is what this pipeline implements)",
        )
    return value


#: A period of the frequency in ``problem.time.frequency`` (``"YYYY-MM"`` for monthly data),
#: written in its text form or as a date; stored in its canonical text form.
Period = Annotated[str, PlainValidator(_period, json_schema_input_type=str)]
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
    """How the time axis is read from the table: its frequency, and either one date/datetime
    column or a year column with a period-of-year column (month, quarter or ISO week)."""

    #: H (hourly), D (daily), W (weekly), M (monthly), Q (quarterly) or Y (yearly)
    frequency: Literal["H", "D", "W", "M", "Q", "Y"]
    #: a date or datetime column (any format pandas parses; ``format`` to be explicit)
    column: Name | None = None
    #: strftime format of ``column`` (for example ``"%Y%m%d"``); default: inferred
    format: Name | None = None
    #: or: the year column ...
    year_column: Name | None = None
    #: ... and the period of the year: month 1-12 (M), quarter 1-4 (Q), ISO week 1-53 (W);
    #: none for yearly data
    period_column: Name | None = None
    #: periods in one seasonal cycle; default from the frequency (H 24, D 7, W 52, M 12,
    #: Q 4, Y 1)
    season_length: Positive | None = None

    @model_validator(mode="after")
    def _one_form(self) -> TimeSpec:
        f = self.frequency
        if (self.column is None) == (self.year_column is None):
            raise rule_error(
                "column",
                "give either 'column' (a date/datetime column) or 'year_column' (with "
                "'period_column' unless the frequency is Y), not both or neither",
                self.column,
            )
        if self.column is not None:
            if self.period_column is not None:
                raise rule_error(
                    "period_column",
                    f"goes with 'year_column', not with 'column' {self.column!r}",
                    self.period_column,
                )
            return self
        if self.format is not None:
            raise rule_error("format", "applies to 'column' (a date column) only", self.format)
        if f in ("H", "D"):
            raise rule_error(
                "year_column",
                f"cannot place {FREQUENCIES[f][0]}ly periods: frequency {f!r} needs a "
                f"date/datetime 'column'",
                self.year_column,
            )
        if f == "Y" and self.period_column is not None:
            raise rule_error(
                "period_column",
                "must be absent for yearly data (the year column is the period)",
                self.period_column,
            )
        if f != "Y" and self.period_column is None:
            raise rule_error(
                "period_column",
                f"is required with 'year_column' for frequency {f!r} (the "
                f"{FREQUENCIES[f][0]} of the year)",
                None,
            )
        if self.period_column is not None and self.period_column == self.year_column:
            raise rule_error(
                "period_column",
                f"must differ from year_column {self.year_column!r}",
                self.period_column,
            )
        return self

    @property
    def columns(self) -> tuple[str, ...]:
        """The table's time columns: ``(column,)``, ``(year, period)`` or ``(year,)``."""
        if self.column is not None:
            return (self.column,)
        return tuple(c for c in (self.year_column, self.period_column) if c is not None)

    @property
    def calendar(self) -> Calendar:
        """How periods of this frequency are counted and shown."""
        return Calendar(self.frequency, self.season_length)

    def describe(self) -> str:
        """``"date (monthly)"``, ``"year+month (monthly)"``: the columns and the frequency."""
        unit = FREQUENCIES[self.frequency][0]
        adjective = {"day": "daily"}.get(unit, unit + "ly")
        return f"{'+'.join(self.columns)} ({adjective})"


class NamedPeriod(StrictModel):
    """A stretch of time reported on by name (for example a crisis)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    start: Period
    end: Period

    @model_validator(mode="after")
    def _ordered(self) -> NamedPeriod:
        cal = active_calendar()
        if cal.parse(self.end) < cal.parse(self.start):
            raise rule_error("end", f"must not be before start {self.start}", self.end)
        return self


class ProblemSpec(StrictModel):
    """The business question written as an ML specification."""

    question: Name
    #: one forecast per value of this column; absent: the table is one series
    segment: Name | None = None
    time: TimeSpec
    target: Name
    #: what the target is called in plots, logs and reports (default: the column name)
    target_label: Name | None = None
    #: the target's unit, shown with every figure of it (for example "homes")
    unit: Name | None = None
    #: periods ahead
    horizon: Annotated[int, AfterValidator(_one_step)]
    metric: Literal["mae", "rmse", "wape"]
    success: Name
    #: stretches of time that metrics and plots report on by name (optional)
    named_periods: list[NamedPeriod] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_columns(self) -> ProblemSpec:
        used = {c: "time" for c in self.time.columns}
        for key in ("segment", "target"):
            value = getattr(self, key)
            if value is None:
                continue
            if value in used:
                raise rule_error(key, f"must be a column other than {used[value]}", value)
            used[value] = key
        names = [p.name for p in self.named_periods]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise rule_error(
                    ("named_periods", i, "name"), f"must be unique among {names}", name
                )
        return self

    @property
    def segment_column(self) -> str:
        """The segment column of the prepared panel (``series`` for a single series)."""
        return self.segment if self.segment is not None else SINGLE_SERIES

    @property
    def single_series(self) -> bool:
        """True when the table is one series (no segment column)."""
        return self.segment is None

    @property
    def calendar(self) -> Calendar:
        """The time axis's calendar (frequency and season length)."""
        return self.time.calendar

    @property
    def label(self) -> str:
        """The target's name for people: ``target_label``, or the column name."""
        return self.target_label or self.target

    @property
    def unit_text(self) -> str:
        """``" (homes)"`` when a unit is given, else empty: appended to figures of the target."""
        return f" ({self.unit})" if self.unit else ""


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
    segment_models: Name
    reference: Name
    deployed_model: Name
    deployed_metadata: Name
    deployed_segments: Name
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
    """The only split is in time: a training window, then a test window (periods)."""

    train_start: Period
    train_end: Period
    test_start: Period
    test_end: Period

    @model_validator(mode="after")
    def _ordered(self) -> WindowSpec:
        cal = active_calendar()
        ts, te = cal.parse(self.train_start), cal.parse(self.train_end)
        vs, ve = cal.parse(self.test_start), cal.parse(self.test_end)
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

    @property
    def history_length(self) -> int:
        """Periods of history the features of one period read (the longest lag or window)."""
        return max([*self.lags, *self.rolling, self.level_window])


class BaselineSpec(StrictModel):
    """Rule-based benchmarks scored exactly like the model, and the per-segment statistical
    forecasters scored beside them as references (never rules: the gate's best rule is
    chosen among ``rules`` only)."""

    rules: list[Rule] = Field(min_length=1)
    #: statsforecast's per-segment models fitted on the training window and scored one step
    #: ahead on the test window (AutoARIMA costs seconds of CPU per segment)
    statistical: list[Literal["auto_ets", "auto_arima", "theta"]] = Field(default_factory=list)

    @field_validator("statistical")
    @classmethod
    def _unique_statistical(cls, value: list[str]) -> list[str]:
        twice = sorted({f for f in value if value.count(f) > 1})
        if twice:
            raise ValueError(f"lists {twice} more than once; each model is scored once")
        return value


class SearchSpec(StrictModel):
    """Hyperparameter search on time-ordered folds inside the training window.

    ``space`` values are checked against the estimator by the check_params stage.
    """

    enabled: bool
    method: Literal["grid", "random"]
    n_iter: Positive
    folds: Positive
    fold_periods: Positive
    n_jobs: NJobs
    space: dict[str, Annotated[list[Any], Field(min_length=1)]]


#: Per-segment candidate families: the scikit-learn estimator on the segment's own rows,
#: and statsforecast's per-series statistical forecasters.
Family = Literal["sklearn", "auto_ets", "auto_arima", "theta", "seasonal_naive"]
#: The single families (the members of a combination are these, without ``sklearn``,
#: plus ``global``).
FAMILIES: tuple[str, ...] = get_args(Family)


class PerSegmentSpec(StrictModel):
    """The candidates of each segment's own model (strategies ``per_segment``, ``best_of``)."""

    #: single families, or combinations such as ``global+theta`` (the mean of the members'
    #: forecasts; members: ``global`` and the statistical families)
    families: list[str] = Field(
        default_factory=lambda: ["auto_ets", "theta", "seasonal_naive"], min_length=1
    )
    #: also every mean of two or more of ``families``' single statistical families and,
    #: for ``best_of`` and ``pooled``, the global model
    combinations: bool = False
    #: a segment with fewer labelled training periods keeps the global model
    min_train_periods: Positive = 36
    #: AutoETS's search space (statsforecast's ``model``: error, trend, season, each A, M,
    #: N or Z for "choose"): ZZZ tries all; ZZA (additive season) is about 40% faster
    ets_space: Annotated[str, Field(pattern=r"^[AMZ][AMNZ][AMNZ]$")] = "ZZZ"

    @field_validator("families")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        from ..modelling.statistical import combination_problem, combine_name, members

        for family in value:
            if len(members(family)) == 1 and family not in FAMILIES:
                raise ValueError(
                    f"has the unknown family {family!r}; expected one of {list(FAMILIES)} "
                    f"or a combination of global and statistical ones such as 'global+theta'"
                )
            problem = combination_problem(family)
            if problem:
                raise ValueError(f"combination {family!r} {problem}")
        value = [combine_name(members(f)) if len(members(f)) > 1 else f for f in value]
        twice = sorted({f for f in value if value.count(f) > 1})
        if twice:
            raise ValueError(f"lists {twice} more than once; each family is a candidate once")
        return value


class EngineSpec(StrictModel):
    """Where the per-segment models are fitted: joblib processes on this machine, or a
    ``dask.distributed`` cluster (``scheduler``, else ``DASK_SCHEDULER_ADDRESS``, else a
    LocalCluster of ``workers`` processes on 127.0.0.1 started for the stage)."""

    backend: Literal["local", "dask"] = "local"
    n_jobs: NJobs = 1
    chunk_segments: Positive = 64
    scheduler: Annotated[str, Field(pattern=r"^(tcp|tls|ws|wss|ucx)://\S+:\d+$")] | None = None
    workers: Positive = 2
    #: seconds to reach the scheduler (or start the LocalCluster) before giving up
    connect_timeout_s: float = Field(default=30.0, gt=0)


class TrainSpec(StrictModel):
    """The estimator, its hyperparameters and the search; the strategy and its engine.

    ``hyperparameters`` are checked against the estimator's own constraints by the
    check_params stage (:mod:`panelcast.pipeline.check_params`).
    """

    estimator: Estimator
    hyperparameters: dict[str, Any]
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)]
    search: SearchSpec
    #: global: one model for every segment; per_segment: each segment's own model (chosen
    #: among ``per_segment.families`` by time-ordered CV); best_of: the better of the two;
    #: pooled: the one candidate (global or a family of ``per_segment.families``, the same
    #: for every segment) with the lowest CV error over all segments
    strategy: Literal["global", "per_segment", "best_of", "pooled"] = "global"
    #: how the global model sees the segment: native (categorical, at most 255 levels for
    #: HistGradientBoosting), target_mean (mean training target of the segment), none, or
    #: auto (native up to 255 levels, else the better of target_mean and none by CV)
    segment_encoding: Literal["auto", "native", "target_mean", "none"] = "auto"
    per_segment: PerSegmentSpec = Field(default_factory=PerSegmentSpec)
    engine: EngineSpec = Field(default_factory=EngineSpec)


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

    current_start: Period
    current_end: Period
    numeric_effect: float = Field(gt=0)
    categorical_effect: float = Field(gt=0, le=1)
    missing_effect: float = Field(gt=0, le=1)
    alpha: float = Field(gt=0, lt=1)
    dataset_share: float = Field(gt=0, le=1)
    key_columns: list[Name] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> DriftSpec:
        cal = active_calendar()
        if cal.parse(self.current_end) < cal.parse(self.current_start):
            raise rule_error(
                "current_end",
                f"must not be before current_start {self.current_start} (the drift window "
                f"is empty)",
                self.current_end,
            )
        return self


class PolicySpec(StrictModel):
    """A retraining policy, replayed by the backtest and applied by the production cycle.

    - ``never``; ``every``: every ``every_periods`` periods;
    - ``on_alarm``: when drift or the error alarm fires;
    - ``on_error`` (cost-aware): when the deployed model's live error over the latest
      ``backtest.error_window_periods`` exceeds ``backtest.error_factor`` times its
      validation error, or when the best rule beat it over those periods by more than
      ``rule_margin_pct`` percent; drift is reported as a reason to look, never to retrain.
      The wait between retrains (``backtest.min_periods_between``) doubles after each
      challenger kept in a row (at most 8 times). With ``per_segment``, when no retrain
      is due, the segments with a statistical model whose own live error exceeds
      ``error_factor`` times their own validation error are refitted alone (each at most
      once per ``min_periods_between``).
    """

    name: Name
    kind: Literal["never", "every", "on_alarm", "on_error"]
    every_periods: Annotated[int, Field(ge=0)] = 0
    rule_margin_pct: float = Field(default=0.0, ge=0)
    per_segment: bool = False

    @model_validator(mode="after")
    def _every(self) -> PolicySpec:
        if self.kind == "every" and self.every_periods < 1:
            raise rule_error("every_periods", "must be >= 1 for kind 'every'", self.every_periods)
        return self


class BacktestSpec(StrictModel):
    """Production replayed period by period from a first training window to the end of the
    data (every length in periods of ``problem.time.frequency``)."""

    first_train_start: Period
    first_train_end: Period
    end: Period
    policies: list[PolicySpec] = Field(min_length=1)
    validation_periods: Positive
    drift_window_periods: Positive
    error_window_periods: Positive
    error_factor: float = Field(gt=0)
    min_periods_between: Annotated[int, Field(ge=0)]
    n_jobs: NJobs
    # promote a challenger only if it also passes evaluate.gate on the validation periods
    # (WAPE and gain over the best rule), as the production cycle's experiment must
    gate: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> BacktestSpec:
        cal = active_calendar()
        start, first_end = cal.parse(self.first_train_start), cal.parse(self.first_train_end)
        if not start < first_end:
            raise rule_error(
                "first_train_end",
                f"must be after first_train_start {self.first_train_start}",
                self.first_train_end,
            )
        if not first_end < cal.parse(self.end):
            raise rule_error(
                "end", f"must be after first_train_end {self.first_train_end}", self.end
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
    # the latest periods of out-of-sample one-step residuals that calibrate the intervals
    # (sliding-window split-conformal: the CV folds' forecasts, then the test window's)
    calibration_periods: Positive

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

    test_periods: Positive
    # part of a DVC experiment name, hence of a git ref
    experiment_prefix: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class CycleSpec(StrictModel):
    """The production cycle (``panelcast cycle``): ingest each new period, monitor, retrain
    with the policy ``policy`` (a name of ``backtest.policies``) and redeploy."""

    policy: Name | None = None  # None: the cycle refuses to run until one is named
    state_dir: Name = "production"  # live errors, audit log, latest forecasts (in git)
    push: bool = True  # dvc push after each cycle's commit when a DVC remote is set
    service_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    # the retrain experiment (the whole pipeline) must end within this many seconds
    retrain_timeout_s: float = Field(default=7200.0, gt=0)
    experiment_prefix: str = Field(default="cycle", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class FilterRule(StrictModel):
    """Keep the rows whose ``column`` passes every test given (a row filter of ``prepare``)."""

    column: Name
    equals: str | int | float | None = None
    isin: list[str | int | float] | None = Field(default=None, alias="in", min_length=1)
    not_in: list[str | int | float] | None = Field(default=None, min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_test(self) -> FilterRule:
        if all(getattr(self, k) is None for k in ("equals", "isin", "not_in", "min", "max")):
            raise rule_error(
                "column",
                "needs at least one test: equals, in, not_in, min or max",
                self.column,
            )
        return self


class WideSpec(StrictModel):
    """Wide to long: value columns (listed, or matched by a regular expression) become
    segments; their names go to the ``segment`` column, their values to ``value``."""

    columns: list[Name] | None = Field(default=None, min_length=1)
    pattern: Name | None = None
    segment: Name
    value: Name

    @model_validator(mode="after")
    def _one_selector(self) -> WideSpec:
        if (self.columns is None) == (self.pattern is None):
            raise rule_error(
                "columns", "give either 'columns' (a list) or 'pattern' (a regex)", self.columns
            )
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise rule_error(
                    "pattern", f"must be a valid regular expression ({exc})", self.pattern
                ) from None
        if self.segment == self.value:
            raise rule_error("value", f"must differ from segment {self.segment!r}", self.value)
        return self


class PrepareSpec(StrictModel):
    """From the collected table to the panel the model needs (one row per segment and
    period), in this order: filter rows, wide to long, aggregate per segment and period,
    insert missing periods. Every step is optional; counts go to ``metrics/validate.json``."""

    filter: list[FilterRule] = Field(default_factory=list)
    wide: WideSpec | None = None
    #: column -> sum, mean, count, last, min or max, per segment and period; the
    #: panel keeps only these columns (with the segment and the time)
    aggregate: dict[Name, Literal["sum", "mean", "count", "last", "min", "max"]] | None = None
    #: insert the periods missing inside each segment's span (their values are missing;
    #: ``count`` columns get 0); false: a gap is an error
    fill_missing: bool = True
    #: value given to inserted periods, per column (for example 0 for sums of events)
    fill_values: dict[Name, float] = Field(default_factory=dict)


class Params(StrictModel):
    """The whole of ``params.yaml``."""

    problem: ProblemSpec
    source: SourceSpec
    prepare: PrepareSpec = Field(default_factory=PrepareSpec)
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
    cycle: CycleSpec = Field(default_factory=CycleSpec)

    @model_validator(mode="after")
    def _cycle_policy(self) -> Params:
        names = [p.name for p in self.backtest.policies]
        if self.cycle.policy is not None and self.cycle.policy not in names:
            raise rule_error(
                ("cycle", "policy"),
                f"must name one of backtest.policies {names}",
                self.cycle.policy,
            )
        return self


# --------------------------------------------------------------------------- messages


def show_value(value: Any) -> str:
    """``repr`` of an offending value, cut to :data:`MAX_SHOWN` characters."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def key_path(loc: tuple[Any, ...]) -> str:
    """``('backtest', 'policies', 1, 'name')`` -> ``backtest.policies[1].name``."""
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


def _declared_calendar(data: Any) -> Calendar:
    """The calendar declared in ``problem.time`` of raw params (monthly when unreadable:
    the time section's own errors are reported by validation)."""
    try:
        time = data["problem"]["time"]
        season = time.get("season_length")
        return Calendar(time["frequency"], season if type(season) is int else None)
    except (KeyError, TypeError, ValueError, AttributeError):
        return MONTHLY


def params_from_dict(data: Any, source: str = "params") -> Params:
    """Validate a parsed ``params.yaml`` mapping into :class:`Params`.

    Periods (windows, drift, backtest, named periods) are read in the frequency of
    ``problem.time``. Raises one :class:`ParamsError` naming ``source`` and every problem.
    """
    try:
        with reading_periods_as(_declared_calendar(data)):
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
