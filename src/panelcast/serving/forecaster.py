"""The deployed model, ready to answer: its file, metadata and the recent history of every
segment, loaded once and checked against the params and the data contract.

A request brings rows in the source schema (any number of periods, one or many
segments). They are checked with the data contract's column rules, merged over the
stored recent history (a request row replaces the stored row of the same segment and
period), and each segment is forecast for the period after its last one with
:func:`panelcast.modelling.features.next_period_features`, the same code the predict
stage uses: a file scored in batch and the same rows sent over HTTP give the same digits.

The service answers through :attr:`Forecaster.fast` (:mod:`panelcast.serving.fastpath`):
the same expressions on per-segment arrays prepared at load, checked against this module's
path by the tests, bit for bit.
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
from ..data.contract import Contract, Failure, TimeRule, check, load_contract
from ..modelling.features import month_index, next_period_features
from ..modelling.model import loads_model
from ..pipeline.predict import forecast_frame, source_columns
from .fastpath import FastPath, check_compiled

logger = logging.getLogger(__name__)


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

    @cached_property
    def fast(self) -> FastPath:
        """Per-segment arrays and the compiled model (built once, on first use)."""
        return FastPath(self)

    def warm_up(self) -> bool:
        """Build the fast path, check the compiled model against ``model.predict`` on every
        stored segment (bit for bit; else it is dropped) and forecast once. Returns whether
        the compiled model is used."""
        used = check_compiled(self.fast, self)
        self.fast.forecast(None, [0])
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
        return self.params.problem.segment

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
        contract = load_contract(paths.contract)
        _check_schema(metadata, params, contract, str(paths.deployed_metadata))
        state = pd.read_parquet(paths.serving_state)
        return cls(model, metadata, state, params, request_contract(contract, _inputs(params)))

    def validate_rows(self, rows: pd.DataFrame, source: str = "request") -> pd.DataFrame:
        """Check request rows against the contract and the known segments."""
        seg = self.segment
        if seg in rows.columns:
            # text values the model does not know (other types: the contract's type rule)
            names = {v for v in rows[seg].dropna() if isinstance(v, str)}
            unknown = sorted(names - self.segment_set)
            if unknown:
                raise UnknownSegmentError(unknown, self.segments)
        p = self.params.problem
        failures = check(rows, self.contract, (p.time.year_column, p.time.month_column))
        errors = [f for f in failures if f.severity == "error"]
        if errors:
            raise RequestRowsError(errors, source)
        return rows

    def forecast(
        self, rows: pd.DataFrame | None = None, segments: list[str] | None = None
    ) -> pd.DataFrame:
        """Next-period forecasts for the segments of ``rows`` (and ``segments``)."""
        seg = self.segment
        wanted = set(segments or [])
        if rows is not None and len(rows):
            rows = self.validate_rows(rows)
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
        out = forecast_frame(features, self.model, self.metadata["features"], offsets, seg)
        out["model_version"] = self.version
        return out


def _inputs(params: Params) -> list[str]:
    return source_columns(params)


def merge_history(state: pd.DataFrame, rows: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Stored history with request rows on top (same segment and period: the request wins)."""
    seg = params.problem.segment
    rows = rows.astype({seg: str})
    both = pd.concat([state, rows], ignore_index=True)
    key = pd.DataFrame({"s": both[seg].astype(str), "t": month_index(both, params.problem)})
    return both[~key.duplicated(keep="last").to_numpy()].reset_index(drop=True)


def _check_schema(metadata: dict, params: Params, contract: Contract, source: str) -> None:
    """Refuse a model whose features or inputs do not match the params and the contract."""
    problems = []
    if metadata.get("feature_spec") != params.features.model_dump():
        problems.append("its feature settings differ from params.yaml 'features'")
    if metadata.get("segment") != params.problem.segment:
        problems.append(
            f"it forecasts per {metadata.get('segment')!r}, params say {params.problem.segment!r}"
        )
    missing = [c for c in metadata.get("input_schema", []) if c not in contract.columns]
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
