"""Stage check_params: the checks of ``params.yaml`` that need more than the core schema.

:mod:`panelcast.core.config` checks every key, type, range and cross-key rule it can
without knowing the rest of the package. What needs the package is checked here, before
any stage runs:

- ``train.hyperparameters`` and every value of ``train.search.space`` against the
  estimator's own scikit-learn parameter constraints (``_validate_params``);
- ``drift.key_columns`` against the columns the drift stage monitors (the features the
  params build, the target and the prediction);
- the data contract ``paths.contract``, loaded strictly, and the columns the params name
  (segment, target, time, exogenous, prepare steps) against the columns it declares,
  followed through the ``prepare`` steps (wide to long, aggregation);
- ``train.segment_encoding: native`` against the segments the data contract requires
  (``completeness.expected_segments``): HistGradientBoosting takes at most ``max_bins``;
- the ``paths``: every output lies inside the repository, is neither an input (the
  source, the contract, params.yaml, dvc.yaml, dvc.lock) nor a file git tracks, nor an
  existing file that dvc.lock does not record as an output. DVC deletes a stage's outputs
  before running it: a snapshot path equal to a local source would destroy the data.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from sklearn.utils._param_validation import InvalidParameterError, make_constraint

from ..core.config import FeatureSpec, Params, ProblemSpec, TrainSpec, show_value
from ..core.errors import ParamsError
from ..core.periods import (
    LEVEL_FEATURE,
    PERIOD,
    PREDICTION,
    SEASON_FEATURE,
    SEGMENT_FEATURE,
    SINGLE_SERIES,
    TARGET,
    WINDOW,
    T,
)
from ..data.contract import Contract, load_contract
from ..data.sources import (
    Budget,
    Limits,
    SourceError,
    http_request,
    local_path,
    regular_file_stat,
    source_kind,
    watch_target,
)
from ..modelling.model import ESTIMATORS, native_level_problem

logger = logging.getLogger(__name__)

#: What :func:`check_params` verifies, in order (written to the stage's metrics file).
CHECKS = [
    "schema",
    "hyperparameters",
    "search_space",
    "drift_key_columns",
    "contract",
    "contract_columns",
    "segment_encoding",
    "paths",
    "source",
]
#: ``paths`` keys that are inputs or folders of git-tracked files, not DVC-cached outputs.
NOT_CACHED = ("contract", "metrics", "plots")
#: Files of the repository itself that no output may replace.
PROJECT_FILES = ("params.yaml", "dvc.yaml", "dvc.lock", ".gitignore", ".dvcignore")
#: Set from ``train.seed`` by the model factory; a value in params would be ignored.
SEED_PARAMETER = "random_state"
#: scikit-learn constraints under which ``true``/``false`` is a meaningful value.
_BOOLEAN_CONSTRAINTS = ("boolean", "verbose", "no_validation")
_SKLEARN_MESSAGE = re.compile(r"must be (?P<what>.*)\. Got .* instead\.$", re.DOTALL)


def feature_names(problem: ProblemSpec, features: FeatureSpec) -> list[str]:
    """The model inputs :func:`panelcast.modelling.features.build_features` makes, in order.

    A pure function of the params (no data), equal to ``feature_columns`` of the table
    ``build_features`` returns (a unit test compares them).
    """
    names = [f"lag_{k}" for k in sorted(set(features.lags))]
    names += [f"roll_{w}" for w in sorted(set(features.rolling))]
    names.append(LEVEL_FEATURE)
    names += [f"exo_{col}" for col in features.exogenous]
    if features.calendar:
        names.append(SEASON_FEATURE)
    if features.segment_feature:
        names.append(SEGMENT_FEATURE)
    meta = {problem.segment_column, PERIOD, T, WINDOW, TARGET}
    return [name for name in dict.fromkeys(names) if name not in meta]


def monitored_columns(problem: ProblemSpec, features: FeatureSpec) -> list[str]:
    """The columns the drift stage compares: every feature, the target and the prediction."""
    return [*feature_names(problem, features), TARGET, PREDICTION]


def _constraint_text(estimator: type, name: str) -> str:
    """scikit-learn's own description of what parameter ``name`` accepts."""
    raw = getattr(estimator, "_parameter_constraints", {}).get(name, [])
    shown = [str(c) for c in map(make_constraint, raw) if not c.hidden]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def _accepts_booleans(raw: Any) -> bool:
    """Whether scikit-learn constraints ``raw`` give ``true``/``false`` a meaning."""
    if raw == "no_validation":
        return True
    return any(
        (isinstance(c, str) and c in _BOOLEAN_CONSTRAINTS) or c is bool or c is object for c in raw
    )


def _name_problem(estimator: str, name: str, value: Any, key: str) -> str | None:
    """Why ``name`` cannot be set in params for ``estimator`` (None when it can)."""
    accepted = ESTIMATORS[estimator]().get_params(deep=False)
    if name not in accepted:
        return (
            f"'{key}' must name a parameter of {estimator} (it does not accept {name!r}; "
            f"accepted: {', '.join(sorted(accepted))}), got {show_value(value)}"
        )
    if name == SEED_PARAMETER:
        return f"'{key}' is set from train.seed (remove it here), got {show_value(value)}"
    return None


def _value_problem(estimator: str, name: str, value: Any, key: str) -> str | None:
    """Why ``value`` is not a valid ``name`` of ``estimator`` (None when it is)."""
    cls = ESTIMATORS[estimator]
    raw = getattr(cls, "_parameter_constraints", {}).get(name, [])
    if isinstance(value, bool) and not _accepts_booleans(raw):
        return (
            f"'{key}' must be {_constraint_text(cls, name)} ({estimator}'s constraint; "
            f"true/false is not a number), got {show_value(value)}"
        )
    try:
        cls(**{name: value})._validate_params()
    except InvalidParameterError as exc:
        match = _SKLEARN_MESSAGE.search(str(exc))
        what = match.group("what") if match else str(exc)
        return f"'{key}' must be {what} ({estimator}'s constraint), got {show_value(value)}"
    return None


def hyperparameter_problems(train: TrainSpec) -> list[str]:
    """Every hyperparameter and search-space value the estimator would refuse."""
    problems = []
    for name, value in train.hyperparameters.items():
        key = f"train.hyperparameters.{name}"
        problems.append(
            _name_problem(train.estimator, name, value, key)
            or _value_problem(train.estimator, name, value, key)
        )
    for name, values in train.search.space.items():
        problem = _name_problem(train.estimator, name, values, f"train.search.space.{name}")
        if problem:
            problems.append(problem)
            continue
        for i, value in enumerate(values):
            key = f"train.search.space.{name}[{i}]"
            problems.append(_value_problem(train.estimator, name, value, key))
    return [p for p in problems if p]


def key_column_problems(params: Params) -> list[str]:
    """Every ``drift.key_columns`` entry that is not a monitored column."""
    monitored = monitored_columns(params.problem, params.features)
    return [
        f"'drift.key_columns[{i}]' must be a monitored column ({', '.join(monitored)}), "
        f"got {show_value(name)}"
        for i, name in enumerate(params.drift.key_columns)
        if name not in monitored
    ]


#: Column names the feature table reserves: a segment column may not take one of them.
RESERVED = (PERIOD, T, WINDOW, TARGET, PREDICTION, SEGMENT_FEATURE)


def contract_column_problems(params: Params, contract: Contract, contract_path: str) -> list[str]:
    """Columns named in params (problem, prepare, features) that the data contract does not
    declare, or declares with a type that cannot work.

    The columns are followed through ``prepare``: ``wide`` turns the columns it selects into
    a segment column and a value column; ``aggregate`` keeps only the columns it names (a
    ``count`` makes a number of any column).
    """
    problem, prepare = params.problem, params.prepare
    numeric = ("integer", "number")
    declared = {name: rule.type for name, rule in contract.columns.items()}
    listing = ", ".join(contract.columns)
    problems: list[str] = []
    reported: set[str] = set()  # one problem per key

    def need(key: str, column: str, types: tuple[str, ...] | None, columns: dict) -> None:
        if key in reported:
            return
        reported.add(key)
        if column not in columns:
            problems.append(
                f"'{key}' must be a column of the table (the data contract {contract_path} "
                f"declares {listing}{_after(prepare)}), got {show_value(column)}"
            )
        elif types is not None and columns[column] not in types:
            problems.append(
                f"'{key}' must be a column of type {' or '.join(types)} (the data contract "
                f"{contract_path} declares {column!r} as {columns[column]}), "
                f"got {show_value(column)}"
            )

    time = problem.time
    date_types = ("datetime", "string") + (numeric if time.format else ())
    if time.column is not None:
        need("problem.time.column", time.column, date_types, declared)
    else:
        need("problem.time.year_column", time.year_column, ("integer",), declared)
        if time.period_column is not None:
            need("problem.time.period_column", time.period_column, ("integer",), declared)
    for i, rule in enumerate(prepare.filter):
        need(f"prepare.filter[{i}].column", rule.column, None, declared)
    columns = dict(declared)
    if prepare.wide is not None:
        wide = prepare.wide
        if wide.columns is not None:
            selected = list(wide.columns)
            for i, col in enumerate(selected):
                need(f"prepare.wide.columns[{i}]", col, numeric, declared)
        else:
            selected = [c for c in declared if re.search(wide.pattern, c)]
            selected = [c for c in selected if c not in time.columns]
            if not selected:
                problems.append(
                    f"'prepare.wide.pattern' must match at least one column of the data "
                    f"contract {contract_path} ({listing}), got {show_value(wide.pattern)}"
                )
            for col in selected:
                if declared[col] not in numeric:
                    problems.append(
                        f"'prepare.wide.pattern' must select numeric columns only (it "
                        f"matches {col!r}, declared as {declared[col]}), "
                        f"got {show_value(wide.pattern)}"
                    )
        for col in selected:
            columns.pop(col, None)
        for key, name in (("segment", wide.segment), ("value", wide.value)):
            if name in columns:
                problems.append(
                    f"'prepare.wide.{key}' must be a new column name (the table already has "
                    f"{name!r}), got {show_value(name)}"
                )
        columns[wide.segment] = "string"
        columns[wide.value] = "number"
        if problem.segment != wide.segment:
            problems.append(
                f"'problem.segment' must be {wide.segment!r} (prepare.wide.segment: the "
                f"wide columns become its values), got {show_value(problem.segment)}"
            )
    if problem.segment is not None:
        need("problem.segment", problem.segment, None, columns)
        if problem.segment in RESERVED:
            problems.append(
                f"'problem.segment' must not be one of the feature table's own columns "
                f"({', '.join(RESERVED)}): rename the column, got {show_value(problem.segment)}"
            )
    elif SINGLE_SERIES in columns:
        problems.append(
            f"'problem.segment' must be set: without it the table is one series and gets a "
            f"{SINGLE_SERIES!r} column, which the table already has (set problem.segment: "
            f"{SINGLE_SERIES} if it names the segments)"
        )
    if prepare.aggregate is not None:
        kept = {}
        for col, how in prepare.aggregate.items():
            need(f"prepare.aggregate.{col}", col, None if how in ("count", "last") else numeric,
                 columns)  # fmt: skip
            if col == problem.segment or col in time.columns:
                problems.append(
                    f"'prepare.aggregate.{col}' must not aggregate the segment or time column "
                    f"(rows are grouped by them), got {show_value(how)}"
                )
            kept[col] = "integer" if how == "count" else columns.get(col, "number")
        after = {k: v for k, v in columns.items() if k in time.columns or k == problem.segment}
        after.update(kept)
        for key, column in [("problem.target", problem.target)] + [
            (f"features.exogenous[{i}]", c) for i, c in enumerate(params.features.exogenous)
        ]:
            if column in columns and column not in kept:
                reported.add(key)
                problems.append(
                    f"'{key}' must be a column prepare.aggregate keeps ({', '.join(kept)}): "
                    f"add it there (for example {column}: sum), got {show_value(column)}"
                )
        columns = after
    need("problem.target", problem.target, numeric, columns)
    for i, col in enumerate(params.features.exogenous):
        need(f"features.exogenous[{i}]", col, numeric, columns)
    for col in params.prepare.fill_values:
        if col not in columns:
            problems.append(
                f"'prepare.fill_values.{col}' must name a column of the prepared panel "
                f"({', '.join(columns)}), got {show_value(col)}"
            )
    return list(dict.fromkeys(problems))


def segment_encoding_problems(params: Params, contract: Contract, contract_path: str) -> list[str]:
    """``train.segment_encoding: native`` with more segments than the estimator takes, when
    the data contract requires that many in the prepared panel: the segments of
    ``completeness.expected_segments`` (a list, or ``allowed``: the segment column's allowed
    values), unless ``completeness.warn`` makes their absence a warning. Fewer segments
    are only known with the data (the check_data stage counts them)."""
    train, problem = params.train, params.problem
    if train.segment_encoding != "native" or not params.features.segment_feature:
        return []
    completeness = contract.completeness
    expected = completeness.expected_segments
    if problem.segment is None or expected is None or "expected_segments" in completeness.warn:
        return []
    if expected == "allowed":
        rule = contract.columns.get(problem.segment)
        if rule is None or rule.allowed is None:
            return []  # the contract check names it with the data
        expected = rule.allowed
    found = f"that the data contract {contract_path} requires (completeness.expected_segments)"
    line = native_level_problem(train, len(set(expected)), found)
    return [line] if line else []


def _after(prepare: Any) -> str:
    steps = [s for s in ("wide", "aggregate") if getattr(prepare, s) is not None]
    return f", followed through prepare.{' and prepare.'.join(steps)}" if steps else ""


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _local_source(uri: str, root: Path) -> Path | None:
    """The file a local ``source.uri`` names (None for package:// and remote URLs)."""
    if uri.startswith("file://"):
        return Path(urlparse(uri).path).resolve()
    if "://" in uri:
        return None
    return (root / uri).resolve()


def _git_tracked(paths: list[str], root: Path) -> set[str]:
    """Which of ``paths`` git tracks (empty when git or the repository is unavailable)."""
    try:
        proc = subprocess.run(
            ["git", "ls-files", "-z", "--", *paths],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return (
        {os.path.normpath(p) for p in proc.stdout.split("\0") if p}
        if proc.returncode == 0
        else set()
    )


def _locked_outputs(root: Path) -> set[str]:
    """Output paths dvc.lock records (empty before the first run)."""
    try:
        text = (root / "dvc.lock").read_text(encoding="utf-8")
        # written by DVC; the C loader reads it ten times faster than the Python one
        lock = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except (OSError, yaml.YAMLError):
        return set()
    stages = lock.get("stages", {}) if isinstance(lock, dict) else {}
    return {
        os.path.normpath(str(out.get("path")))
        for stage in stages.values()
        if isinstance(stage, dict)
        for out in stage.get("outs", [])
        if isinstance(out, dict)
    }


def path_problems(params: Params, root: Path | None = None) -> list[str]:
    """Every ``paths`` entry that would make DVC delete or overwrite something it must not."""
    root = (root or Path.cwd()).resolve()
    paths = params.paths
    problems: list[str] = []
    resolved: dict[str, Path] = {}
    for key in type(paths).model_fields:
        value = getattr(paths, key)
        target = (root / value).resolve()
        if key == "contract":  # an input: it may live anywhere
            resolved[key] = target
            continue
        if Path(value).is_absolute() or not _inside(target, root) or target == root:
            problems.append(
                f"'paths.{key}' must be a relative path inside the repository {root}, "
                f"got {show_value(value)}"
            )
            continue
        if {".git", ".dvc"} & set(target.relative_to(root).parts):
            problems.append(
                f"'paths.{key}' must not be inside .git or .dvc, got {show_value(value)}"
            )
            continue
        resolved[key] = target
    outputs = {k: v for k, v in resolved.items() if k not in NOT_CACHED}
    inputs = {f"the project file {name}": (root / name).resolve() for name in PROJECT_FILES}
    if "contract" in resolved:
        inputs["the data contract paths.contract"] = resolved["contract"]
    source = _local_source(params.source.uri, root)
    if source is not None:
        inputs["the source file source.uri"] = source
    seen: dict[Path, str] = {}
    for key, target in outputs.items():
        value = getattr(paths, key)
        for what, used in inputs.items():
            if target == used or _inside(used, target):
                problems.append(
                    f"'paths.{key}' must not be {what} (DVC deletes a stage's outputs before "
                    f"running it: the file would be lost), got {show_value(value)}"
                )
        if target in seen:
            problems.append(
                f"'paths.{key}' must differ from 'paths.{seen[target]}' (two outputs cannot "
                f"share a file), got {show_value(value)}"
            )
        seen[target] = key
    if problems:
        return problems
    relative = {k: os.path.normpath(os.path.relpath(v, root)) for k, v in outputs.items()}
    tracked = _git_tracked(sorted(relative.values()), root)
    locked = _locked_outputs(root)
    for key, rel in relative.items():
        value = getattr(paths, key)
        if rel in tracked:
            problems.append(
                f"'paths.{key}' must not be a file git tracks (DVC would overwrite it with "
                f"the stage's output), got {show_value(value)}"
            )
        elif (root / rel).exists() and rel not in locked:
            problems.append(
                f"'paths.{key}' must not be an existing file that no stage produced (dvc.lock "
                f"does not record it; DVC deletes a stage's outputs before running it), "
                f"got {show_value(value)}"
            )
    return problems


def source_problems(params: Params) -> list[str]:
    """``source.watch`` must be what DVC has to watch for ``source.uri``; a local source
    must be a regular file (DVC hashes it: a named pipe or a device would block it); an
    http(s) source must answer a HEAD request within ``source.timeout_s`` (DVC asks it for
    its ETag next, with its own 60 s timeouts)."""
    source = params.source
    expected = watch_target(source.uri)
    problems = []
    if source.watch != expected:
        problems.append(
            f"'source.watch' must be {expected!r} for source.uri {source.uri!r} (DVC watches "
            f"it to rerun collect when the data changes), got {show_value(source.watch)}"
        )
    if source_kind(source.uri) == "local":
        try:
            regular_file_stat(local_path(source.uri), source.uri)
        except SourceError as exc:
            problems.append(f"'source.uri': {exc}")
    elif source_kind(source.uri) == "http":
        limits = Limits(source.timeout_s, source.timeout_s * 2, source.max_bytes)
        try:
            headers = http_request(source.uri, Budget(source.uri, limits), None, method="HEAD")
        except SourceError as exc:
            problems.append(f"'source.uri': {exc}")
        else:
            if not headers.get("etag") and not headers.get("content-md5"):
                logger.warning(
                    "source %s: the server sends no ETag nor Content-MD5; DVC needs one of "
                    "them to watch a URL (source.watch): copy the file to a local path if "
                    "`dvc repro` refuses it",
                    source.uri,
                )
    return problems


def check_params(params: Params, file: str = "params.yaml") -> dict:
    """Run the checks beyond the schema on ``params`` (read from ``file``).

    Raises :class:`ParamsError` naming ``file``, every key and value at fault, or
    :class:`~panelcast.core.errors.ContractError` when the data contract is invalid.
    Returns the stage's summary; it does not change while the params stay valid.
    """
    problems = hyperparameter_problems(params.train) + key_column_problems(params)
    if problems:
        raise ParamsError(f"{file}: {'; '.join(problems)}")
    contract = load_contract(params.paths.contract, calendar=params.problem.calendar)
    problems = contract_column_problems(params, contract, params.paths.contract)
    problems += segment_encoding_problems(params, contract, params.paths.contract)
    problems += path_problems(params)
    problems += source_problems(params)
    if problems:
        raise ParamsError(f"{file}: {'; '.join(problems)}")
    logger.info("%s: valid (%s)", file, ", ".join(CHECKS))
    return {"file": file, "valid": True, "checks": CHECKS}
