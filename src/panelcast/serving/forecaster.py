"""The deployed model, ready to answer: its file, metadata and the recent history of every
segment, loaded once and checked against the params and the data contract.

A request brings rows in the source schema (any number of periods, one or many
segments). They are checked with the data contract's column rules and their time is read
as ``problem.time`` declares it (a date/datetime column in its format, or year + period
columns; a time that cannot be read is a contract failure ``time_readable`` naming the
column and the values). The rows are merged over the stored recent history (a request row
replaces the stored row of the same segment and period), and each segment is forecast for
the period after its last one with
:func:`panelcast.modelling.features.next_period_features`, the same code the predict
stage uses: a file scored in batch and the same rows sent over HTTP give the same digits.

The service answers through :attr:`Forecaster.fast` (:mod:`panelcast.serving.fastpath`):
the same expressions on per-segment arrays prepared at load, checked against this module's
path by the tests, bit for bit.

A segment the deployment routes to a model of its own (``train.strategy`` per_segment or
best_of; :mod:`panelcast.serving.segments`) is forecast by it: a scikit-learn model on the
same next-period feature row, a statistical model from its stored series with the
request's rows of that segment replacing or extending it (:func:`own_forecasts`, the
predict stage's code). The interval offsets are the global model's for every segment.

A single series (``problem.segment`` absent) has one segment, named after the target as in
the prepared panel (its ``series`` column): request rows may omit that column, and the
service fills it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import Params
from ..core.errors import DataError, ModelFileError, UserError
from ..core.io import read_json
from ..core.periods import PERIODS_PER_YEAR
from ..data.contract import (
    TIME_READABLE,
    Contract,
    Failure,
    TimeRule,
    check,
    load_contract,
)
from ..data.timeaxis import parse_datetimes, time_columns_of, time_index
from ..modelling.features import next_period_features, period_of
from ..modelling.many import GLOBAL
from ..modelling.model import loads_model
from ..modelling.statistical import is_statistical, statistical_mask
from ..pipeline.predict import (
    SegmentDeployment,
    forecast_frame,
    own_forecasts,
    point_forecasts,
    source_columns,
)
from .fastpath import FAMILY, FastPath, check_compiled
from .segments import load_segment_models

logger = logging.getLogger(__name__)

#: Examples of offending values a failure found here shows (as the contract's do).
N_EXAMPLES = 5


class UnknownSegmentError(UserError):
    """A request names a segment the deployed model was not fitted on."""

    def __init__(self, segments: list[str], known: list[str]):
        self.segments = segments
        super().__init__(
            f"unknown segment(s) {segments[:5]}: the model knows {len(known)} segments "
            f"(e.g. {known[:3]})."
        )


class RequestRowsError(DataError):
    """Request rows break the data contract; ``failures`` says which column and rule."""

    def __init__(self, failures: list[Failure], source: str):
        self.failures = failures
        first = "; ".join(f.message for f in failures[:3])
        super().__init__(f"{source}: {len(failures)} contract violation(s): {first}")


def request_contract(contract: Contract, columns: list[str]) -> Contract:
    """The contract's column rules for request rows: only the input columns, and none of
    the rules about a whole table (row count, missing share, constancy, time span)."""
    rules = {
        name: rule.model_copy(update={"max_missing": None, "allow_constant": True, "warn": []})
        for name, rule in contract.columns.items()
        if name in columns
    }
    return contract.model_copy(
        update={
            "columns": rules,
            "min_rows": 1,
            "extra_columns": "error",
            "time": TimeRule(no_future=contract.time.no_future),
        }
    )


@dataclass
class Forecaster:
    """A deployed model with what it needs to forecast any segment it knows."""

    model: Any
    metadata: dict
    state: pd.DataFrame
    params: Params
    contract: Contract
    segment_models: SegmentDeployment | None = None

    @property
    def routed(self) -> bool:
        """Whether some segment is forecast by a model of its own."""
        return self.segment_models is not None and self.segment_models.routed

    def family(self, segment: str) -> str:
        """The family of the model that forecasts ``segment``."""
        return GLOBAL if self.segment_models is None else self.segment_models.family(segment)

    @cached_property
    def fast(self) -> FastPath:
        """Per-segment arrays and the compiled model (built once, on first use)."""
        return FastPath(self)

    def warm_up(self) -> bool:
        """Build the fast path, check the compiled model against ``model.predict`` on every
        stored segment (bit for bit; else it is dropped) and forecast once (and every
        statistical segment from its stored series). Returns whether the compiled model is
        used."""
        used = check_compiled(self.fast, self)
        self.fast.forecast(None, [0])
        if self.routed:  # each statistical segment's forecast from its stored series, once
            stat = [i for i, f in enumerate(self.fast.family_of) if is_statistical(f)]
            if stat:
                self.fast.forecast(None, stat)
        return used

    def forecast_fast(
        self, rows: pd.DataFrame | None = None, segments: list[str] | None = None
    ) -> pd.DataFrame:
        """:meth:`forecast` through the fast path (same frame, same digits)."""
        seg = self.segment
        wanted = list(segments or [])
        unknown = sorted(set(wanted) - self.segment_set)
        arrays = None
        if rows is not None and len(rows):
            rows = self.validate_rows(rows)
            arrays = self.fast.rows_from_frame(rows)
        if unknown:
            raise UnknownSegmentError(unknown, self.segments)
        idx = [self.fast.index[s] for s in wanted]
        return self.fast.forecast(arrays, idx).frame(seg, self.version)

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @cached_property
    def segments(self) -> list[str]:
        return list(self.metadata["segments"] or sorted(self.state[self.segment].unique()))

    @cached_property
    def segment_set(self) -> frozenset[str]:
        return frozenset(self.segments)

    @property
    def segment(self) -> str:
        return self.params.problem.segment_column

    @classmethod
    def load(cls, params: Params, allow_failed_gate: bool = False) -> Forecaster:
        """Load the deployed model named in ``params.paths``; refuse what does not match."""
        paths = params.paths
        metadata = read_json(paths.deployed_metadata)
        data = Path(paths.deployed_model).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != metadata.get("sha256"):
            raise ModelFileError(
                f"{paths.deployed_model}: sha256 {digest[:16]}... does not match "
                f"{paths.deployed_metadata} ({str(metadata.get('sha256'))[:16]}...); the file "
                f"was replaced or corrupted: restore it with `dvc checkout`."
            )
        model = loads_model(data, str(paths.deployed_model))
        if not metadata["gate"]["passed"] and not allow_failed_gate:
            raise ModelFileError(
                f"{paths.deployed_metadata}: the deployed model failed its evaluation gate "
                f"({'; '.join(metadata['gate']['failures'])}); refusing to serve it "
                f"(--allow-failed-gate overrides)."
            )
        contract = load_contract(paths.contract, params.problem.calendar)
        _check_schema(metadata, params, contract, str(paths.deployed_metadata))
        segment_models = load_segment_models(params, metadata)
        state = pd.read_parquet(current_files(params, metadata)["serving_state"])
        return cls(
            model,
            metadata,
            state,
            params,
            request_contract(contract, _inputs(params)),
            segment_models,
        )

    def validate_rows(self, rows: pd.DataFrame, source: str = "request") -> pd.DataFrame:
        """Check request rows against the contract, the time axis and the known segments;
        returns them with the segment column (filled for a single series)."""
        seg, problem = self.segment, self.params.problem
        if problem.single_series:
            rows = self._single_series_rows(rows)
        elif seg in rows.columns:
            # text values the model does not know (other types: the contract's type rule)
            names = {v for v in rows[seg].dropna() if isinstance(v, str)}
            unknown = sorted(names - self.segment_set)
            if unknown:
                raise UnknownSegmentError(unknown, self.segments)
        source_rows = rows.drop(columns=[seg]) if problem.single_series else rows
        view, parsed = self._contract_view(source_rows)
        failures = check(view, self.contract, problem.time)
        errors = [f for f in failures if f.severity == "error"]
        time_columns = set(problem.time.columns)
        if parsed:  # a date that did not parse is missing in the view: named from the rows
            artefact = {TIME_READABLE, "not_null"}
            errors = [f for f in errors if not (f.column in time_columns and f.rule in artefact)]
            errors += self._time_failures(source_rows)
        if not errors and seg in rows.columns:
            errors += self._duplicate_periods(rows)
        if errors:
            raise RequestRowsError(errors, source)
        return rows

    def _single_series_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Rows of the single series with its ``series`` column (the target's name)."""
        seg, name = self.segment, self.params.problem.target
        if seg in rows.columns:
            wrong = sorted({str(v) for v in rows[seg].dropna() if v != name})
            if wrong:
                raise UnknownSegmentError(wrong, self.segments)
        rows = rows.copy()
        rows[seg] = name
        return rows

    def _contract_view(self, rows: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
        """``rows`` as the contract reads them, and whether a date column was parsed: a date
        column declared ``datetime`` arrives as text in JSON, so it is parsed first (a
        value that does not parse becomes missing there; the time check names it)."""
        column = self.params.problem.time.column
        rule = self.contract.columns.get(column) if column else None
        if rule is None or rule.type != "datetime" or column not in rows.columns:
            return rows, False
        values = rows[column]
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            return rows, False
        parsed = parse_datetimes(values, self.params.problem.time.format)
        return rows.assign(**{column: parsed}), True

    def _time_failures(self, rows: pd.DataFrame) -> list[Failure]:
        """A ``time_readable`` failure for rows whose time cannot be read, naming their raw
        values (the contract's view holds them already parsed, unreadable ones missing)."""
        time_spec = self.params.problem.time
        columns = list(time_spec.columns)
        if not all(c in rows.columns for c in columns):
            return []  # the contract names a missing column
        ok, _ = time_index(rows, time_spec)
        if ok.all():
            return []
        bad = np.flatnonzero(~ok)
        cells = rows[columns].iloc[bad[:N_EXAMPLES]].to_numpy(dtype=object)
        if len(columns) == 1:
            examples = [row[0] for row in cells]
        else:
            examples = [
                ", ".join(f"{c}={v}" for c, v in zip(columns, row, strict=True)) for row in cells
            ]
        cal = self.params.problem.calendar
        if time_spec.column is None:
            per = f" and {cal.unit}s 1..{PERIODS_PER_YEAR[cal.frequency]} of the year"
            how = "whole years 1..9999" + (per if time_spec.period_column else "")
        elif time_spec.format:
            how = f"dates in format {time_spec.format!r}"
        else:
            how = "dates or datetimes"
        where = "+".join(columns)
        return [
            Failure(
                "error",
                where,
                TIME_READABLE,
                len(bad),
                examples,
                f"time {time_spec.describe()} must give every row its {cal.unit}; {len(bad)} "
                f"row(s) are missing or not readable as {how}, for example {examples[:3]}.",
            )
        ]

    def _duplicate_periods(self, rows: pd.DataFrame) -> list[Failure]:
        """A ``unique_period`` failure for two rows of one segment in the same period (two
        dates of one week, for example)."""
        problem = self.params.problem
        _, t = time_index(rows, problem.time)
        key = pd.DataFrame({"s": rows[self.segment].astype(str).to_numpy(), "t": t})
        dup = key.duplicated(keep=False).to_numpy()
        if not dup.any():
            return []
        cal = problem.calendar
        examples = [
            f"{s} {cal.format(p)}" for s, p in key[dup].drop_duplicates().head(N_EXAMPLES).values
        ]
        keys = (
            problem.time.columns if problem.single_series else (self.segment, *problem.time.columns)
        )
        column = "+".join(keys)
        return [
            Failure(
                "error",
                column,
                "unique_period",
                int(dup.sum()),
                examples,
                f"{int(dup.sum())} rows share a {cal.unit} with another row of their "
                f"segment, for example {examples[:3]}; send one row per segment and {cal.unit}.",
            )
        ]

    def forecast(
        self,
        rows: pd.DataFrame | None = None,
        segments: list[str] | None = None,
        checked: bool = False,
    ) -> pd.DataFrame:
        """Next-period forecasts for the segments of ``rows`` (and ``segments``).

        ``checked``: the rows come from the validated panel (the production cycle), so the
        request checks are skipped."""
        seg = self.segment
        wanted = set(segments or [])
        if rows is not None and len(rows):
            if not checked:
                rows = self.validate_rows(rows)
            elif self.params.problem.single_series and seg not in rows.columns:
                rows = rows.assign(**{seg: self.params.problem.target})
            wanted |= set(rows[seg].astype(str))
        unknown = sorted(wanted - self.segment_set)
        if unknown:
            raise UnknownSegmentError(unknown, self.segments)
        history = self.state[self.state[seg].isin(wanted)]
        if rows is not None and len(rows):
            history = merge_history(history, rows[_inputs(self.params)], self.params)
        features = next_period_features(
            history, self.params.problem, self.params.features, self.segments
        )
        offsets = {int(k): tuple(v) for k, v in self.metadata["interval_offsets"].items()}
        columns = self.metadata["features"]
        point = point_forecasts(features, self.model, columns)
        if self.routed:
            new = self._new_values(rows) if rows is not None and len(rows) else None
            point = own_forecasts(features, point, self.segment_models, seg, new)
        out = forecast_frame(features, self.model, columns, offsets, seg, point=point)
        out["model_version"] = self.version
        if self.routed:
            out[FAMILY] = self.segment_models.families(out[seg])
        return out

    def _new_values(self, rows: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Periods and target values of validated request ``rows`` of the statistical
        segments, by segment (what their models filter after the stored series)."""
        seg, problem = self.segment, self.params.problem
        names = rows[seg].astype(str).to_numpy()
        stat = statistical_mask(self.segment_models.families(rows[seg]))
        if not stat.any():
            return {}
        _, t = time_index(rows, problem.time)
        t = np.asarray(t, dtype=np.int64)
        y = rows[problem.target].to_numpy(dtype=np.float64)
        return {name: (t[names == name], y[names == name]) for name in pd.unique(names[stat])}


def current_files(params: Params, metadata: dict | None = None) -> dict[str, Path]:
    """The serving state and batch forecasts to serve: the production cycle's
    (``<cycle.state_dir>/serving_state.parquet`` and ``forecasts.parquet``, written each
    period) when its ``state.json`` names the deployed model's version, else the predict
    stage's (``paths.serving_state``, ``paths.forecasts``)."""
    paths = params.paths
    own = {"serving_state": Path(paths.serving_state), "forecasts": Path(paths.forecasts)}
    state_dir = Path(params.cycle.state_dir)
    cycle = {
        "serving_state": state_dir / "serving_state.parquet",
        "forecasts": state_dir / "forecasts.parquet",
    }
    if not all(p.is_file() for p in cycle.values()) or not (state_dir / "state.json").is_file():
        return own
    try:
        version = read_json(state_dir / "state.json").get("model_version")
        if metadata is None:
            metadata = read_json(paths.deployed_metadata)
    except (OSError, ValueError):
        return own
    return cycle if version == metadata.get("version") else own


def _inputs(params: Params) -> list[str]:
    return source_columns(params)


def merge_history(state: pd.DataFrame, rows: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Stored history with request rows on top (same segment and period: the request wins).

    The rows' time columns are first written as the prepared panel holds them (a date
    column as the period's start, year and period as integers), and a single series gets
    its ``series`` column.
    """
    problem = params.problem
    seg = problem.segment_column
    rows = rows.copy()
    if problem.single_series and seg not in rows.columns:
        rows[seg] = problem.target
    rows = rows.astype({seg: str})
    ok, t = time_index(rows, problem.time)
    if not ok.all():
        raise DataError(
            f"request rows: {int((~ok).sum())} row(s) have no readable "
            f"{problem.calendar.unit} in {list(problem.time.columns)}; validate them first."
        )
    for name, values in time_columns_of(t, problem.time).items():
        rows[name] = values
    both = pd.concat([state, rows], ignore_index=True)
    key = pd.DataFrame({"s": both[seg].astype(str), "t": period_of(both, problem)})
    return both[~key.duplicated(keep="last").to_numpy()].reset_index(drop=True)


def _check_schema(metadata: dict, params: Params, contract: Contract, source: str) -> None:
    """Refuse a model whose features or inputs do not match the params and the contract."""
    problems = []
    if metadata.get("feature_spec") != params.features.model_dump():
        problems.append("its feature settings differ from params.yaml 'features'")
    seg = params.problem.segment_column
    if metadata.get("segment") != seg:
        problems.append(f"it forecasts per {metadata.get('segment')!r}, params say {seg!r}")
    own = {seg} if params.problem.single_series else set()  # the service fills it
    missing = [
        c for c in metadata.get("input_schema", []) if c not in contract.columns and c not in own
    ]
    if missing:
        problems.append(f"its input columns {missing} are not in the data contract")
    if problems:
        raise ModelFileError(
            f"{source}: the deployed model does not match the configuration: "
            + "; ".join(problems)
            + "; rerun `dvc repro` (or `dvc checkout`) so they agree."
        )


def forecasts_as_records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts (missing values as None)."""
    clean = frame.astype(object).where(frame.notna(), None)
    return [
        {k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()}
        for row in clean.to_dict(orient="records")
    ]
