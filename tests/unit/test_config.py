"""Params are validated strictly: unknown keys, missing keys, wrong types and values out of
range name the key and the value; the check_params stage refuses them with exit code 2."""

import copy
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import typing

import pytest
import yaml
from pydantic import ValidationError

from panelcast.core.config import (
    FeatureSpec,
    GateSpec,
    ParamsError,
    PolicySpec,
    TrainSpec,
    WindowSpec,
    load_params,
    params_from_dict,
    reading_periods_as,
)
from panelcast.core.periods import MONTHLY, PREDICTION, TARGET
from panelcast.modelling.features import build_features, feature_columns
from panelcast.modelling.model import ESTIMATORS
from panelcast.pipeline.check_params import check_params, feature_names, monitored_columns

from ..conftest import ROOT, make_panel


@pytest.fixture
def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_repository_params_load(raw):
    p = params_from_dict(raw)
    assert p.problem.target == "sales"
    assert p.windows.test_start == "2011-12"


def test_unknown_key_is_named(raw):
    bad = copy.deepcopy(raw)
    bad["train"]["seeed"] = 1
    with pytest.raises(ParamsError, match=r"train\.seeed"):
        params_from_dict(bad)


def test_misspelled_section_is_named(raw):
    bad = copy.deepcopy(raw)
    bad["trian"] = bad.pop("train")
    with pytest.raises(ParamsError, match="trian"):
        params_from_dict(bad)


def test_missing_key_is_named(raw):
    bad = copy.deepcopy(raw)
    del bad["drift"]["alpha"]
    with pytest.raises(ParamsError, match=r"missing params key.*drift\.alpha"):
        params_from_dict(bad)


@pytest.mark.parametrize(
    "section,key,value,fragment",
    [
        ("train", "seed", "42", "train.seed' must be an integer"),
        ("train", "seed", True, "train.seed' must be an integer"),
        ("drift", "alpha", "small", "drift.alpha' must be a number"),
        ("features", "lags", 3, "features.lags' must be a list"),
        ("problem", "metric", "mape", "problem.metric' must be one of"),
    ],
)
def test_wrong_type_is_named(raw, section, key, value, fragment):
    bad = copy.deepcopy(raw)
    bad[section][key] = value
    with pytest.raises(ParamsError, match=fragment.replace(".", r"\.")):
        params_from_dict(bad)


def test_empty_training_window(raw):
    bad = copy.deepcopy(raw)
    bad["windows"]["train_end"] = "1999-12"
    with pytest.raises(ParamsError, match="training window is empty"):
        params_from_dict(bad)


def test_test_window_overlapping_training(raw):
    bad = copy.deepcopy(raw)
    bad["windows"]["test_start"] = "2011-06"
    with pytest.raises(ParamsError, match="must start after the training window"):
        params_from_dict(bad)


def test_bad_month_string(raw):
    bad = copy.deepcopy(raw)
    bad["windows"]["train_start"] = "2000-13"
    with pytest.raises(ParamsError, match="outside 1..12"):
        params_from_dict(bad)


def test_month_round_trip():
    assert MONTHLY.format(MONTHLY.parse("2011-12")) == "2011-12"
    assert MONTHLY.parse("2000-01") == 2000 * 12


# --------------------------------------------------------------------------- time axis


@pytest.mark.parametrize(
    "time,windows,expected",
    [
        (
            {"frequency": "D", "column": "day", "format": "%d/%m/%Y"},
            ("2001-01-01", "2001-06-30", datetime.date(2001, 7, 1), "2001-12-31"),
            ("2001-01-01", "2001-06-30", "2001-07-01", "2001-12-31"),
        ),
        (
            {"frequency": "W", "column": "week"},
            ("2001-01-03", "2001-06-27", "2001-07-04", "2001-12-26"),  # Wednesdays
            ("2001-01-01", "2001-06-25", "2001-07-02", "2001-12-24"),  # their Mondays
        ),
        (
            {"frequency": "Q", "year_column": "year", "period_column": "quarter"},
            ("2000-Q1", "2005-Q4", "2006Q1", "2007-q4"),
            ("2000-Q1", "2005-Q4", "2006-Q1", "2007-Q4"),
        ),
        (
            {"frequency": "Y", "year_column": "year"},
            (1900, "1950", 1951, 1972),
            ("1900", "1950", "1951", "1972"),
        ),
        (
            {"frequency": "H", "column": "stamp"},
            ("2013-02-11 00:00", "2013-02-20 23:00", "2013-02-21 00", "2013-02-22T05:00"),
            ("2013-02-11 00:00", "2013-02-20 23:00", "2013-02-21 00:00", "2013-02-22 05:00"),
        ),
    ],
)
def test_periods_are_read_in_the_declared_frequency(raw, time, windows, expected):
    data = copy.deepcopy(raw)
    data["problem"]["time"] = time
    data["problem"]["named_periods"] = []
    keys = ("train_start", "train_end", "test_start", "test_end")
    data["windows"] = dict(zip(keys, windows, strict=True))
    for key in ("drift", "backtest"):  # out of the way: the windows are the point here
        data[key] = None
    with pytest.raises(ParamsError) as info:
        params_from_dict(data)
    assert "windows" not in str(info.value), str(info.value)
    with reading_periods_as(params_from_dict_calendar(time)):
        section = WindowSpec.model_validate(data["windows"])
    assert tuple(getattr(section, k) for k in keys) == expected


def params_from_dict_calendar(time: dict):
    from panelcast.core.config import TimeSpec

    return TimeSpec.model_validate(time).calendar


@pytest.mark.parametrize(
    "time,fragment",
    [
        ({"frequency": "M"}, "give either 'column'"),
        (
            {"frequency": "M", "column": "date", "year_column": "year"},
            "give either 'column'",
        ),
        ({"frequency": "D", "year_column": "year"}, "needs a date/datetime 'column'"),
        ({"frequency": "M", "year_column": "year"}, "'problem.time.period_column' is required"),
        (
            {"frequency": "Y", "year_column": "year", "period_column": "month"},
            "must be absent for yearly data",
        ),
        ({"frequency": "M", "year_column": "y", "format": "%Y"}, "applies to 'column'"),
        ({"frequency": "fortnightly", "column": "d"}, "'problem.time.frequency' must be one of"),
        ({"frequency": "M", "column": "d", "season_length": 0}, "season_length' must be >= 1"),
    ],
)
def test_time_spec_mistakes_name_the_key(raw, time, fragment):
    with pytest.raises(ParamsError) as info:
        params_from_dict(edit(raw, "problem.time", time), "params.yaml")
    assert fragment in str(info.value), str(info.value)


def test_periods_in_another_form_are_refused_with_the_expected_form(raw):
    data = edit(raw, "problem.time", {"frequency": "Q", "column": "d"})
    with pytest.raises(ParamsError) as info:
        params_from_dict(data, "params.yaml")
    text = str(info.value)
    assert "'windows.train_start' must be a quarter 'YYYY-Qn'" in text, text
    assert "\n" not in text


def test_season_length_defaults_from_the_frequency_and_can_be_overridden(raw):
    for freq, season in (("H", 24), ("D", 7), ("W", 52), ("M", 12), ("Q", 4), ("Y", 1)):
        spec = params_from_dict_calendar({"frequency": freq, "column": "d"})
        assert spec.season_length == season
    assert (
        params_from_dict_calendar(
            {"frequency": "D", "column": "d", "season_length": 365}
        ).season_length
        == 365
    )


def test_segment_is_optional_and_named_periods_too(raw):
    data = copy.deepcopy(raw)
    del data["problem"]["segment"]
    del data["problem"]["named_periods"]
    p = params_from_dict(data)
    assert p.problem.single_series and p.problem.segment_column == "series"
    assert p.problem.named_periods == []
    assert params_from_dict(raw).problem.named_periods[0].name == "crisis"


@pytest.mark.parametrize(
    "dotted,value,fragment",
    [
        ("prepare.wide", {"segment": "s", "value": "v"}, "give either 'columns'"),
        (
            "prepare.wide",
            {"pattern": "(", "segment": "s", "value": "v"},
            "'prepare.wide.pattern' must be a valid regular expression",
        ),
        ("prepare.aggregate", {"sales": "median"}, "'prepare.aggregate.sales' must be one of"),
        ("prepare.filter", [{"column": "city"}], "needs at least one test"),
        ("prepare.filter", [{"column": "city", "in": []}], "'prepare.filter[0].in' must hold"),
        ("prepare.fill_missing", "yes", "'prepare.fill_missing' must be true or false"),
        (
            "problem.named_periods",
            [{"name": "crisis", "start": "2010-01", "end": "2009-01"}],
            "'problem.named_periods[0].end' must not be before start",
        ),
    ],
)
def test_prepare_and_named_period_mistakes_name_the_key(raw, dotted, value, fragment):
    with pytest.raises(ParamsError) as info:
        params_from_dict(edit(raw, dotted, value), "params.yaml")
    assert fragment in str(info.value), str(info.value)


def test_load_params_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("problem: [unclosed\n")
    with pytest.raises(ParamsError, match="params.yaml"):
        load_params(path)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------- strict schema


def edit(data: dict, dotted: str, value=None, *, rename: str | None = None) -> dict:
    """A deep copy of ``data`` with ``dotted`` (``a.b[1].c``) set to ``value`` or renamed."""
    data = copy.deepcopy(data)
    *parents, last = re.findall(r"[^.\[\]]+|\[\d+\]", dotted)
    node = data
    for part in parents:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    if rename is not None:
        node[rename] = node.pop(last)
    else:
        node[int(last[1:-1]) if last.startswith("[") else last] = value
    return data


def full_check(data: dict, file: str = "params.yaml") -> dict:
    """Everything the check_params stage checks, on a parsed params mapping."""
    data = edit(data, "paths.contract", str(ROOT / "contract.yaml"))
    return check_params(params_from_dict(data, file), file)


#: (dotted key, new value or None to misspell the key's last part, key named, value shown)
INVALID = [
    ("drift.numeric_effect", -1, "drift.numeric_effect", "-1"),
    ("drift.dataset_share", 5.0, "drift.dataset_share", "5.0"),
    ("drift.numeric_effect", math.nan, "drift.numeric_effect", "nan"),
    (
        "train.hyperparameters.learning_rate",
        "fast",
        "train.hyperparameters.learning_rate",
        "'fast'",
    ),
    ("train.estimator", "XGB", "train.estimator", "'XGB'"),
    ("evaluate.gate.max_wape", -3, "evaluate.gate.max_wape", "-3"),
    ("backtest.n_jobs", 0, "backtest.n_jobs", "0"),
    ("drift.key_columns", ["nonexistent"], "drift.key_columns[0]", "'nonexistent'"),
    ("drift.alpha", None, "drift.alhpa", "0.05"),
    ("train.search.enabled", None, "train.search.enabeld", "True"),
    ("backtest.policies[1].every_periods", None, "backtest.policies[1].every_monhts", "12"),
    ("compute", None, "cmopute", None),
]
INVALID_IDS = [f"{case[2]}={case[3]}" for case in INVALID]
#: The same through the stage (a process each): every value, two of the misspellings.
STAGE_INVALID = [case for case in INVALID if case[0] not in ("drift.alpha", "train.search.enabled")]
STAGE_IDS = [f"{case[2]}={case[3]}" for case in STAGE_INVALID]


def invalid_params(raw: dict, dotted: str, value, key: str) -> dict:
    if value is None:  # a misspelled key: the last part of ``key`` replaces the right one
        return edit(raw, dotted, rename=key.rsplit(".", 1)[-1])
    return edit(raw, dotted, value)


@pytest.mark.parametrize("dotted,value,key,shown", INVALID, ids=INVALID_IDS)
def test_invalid_value_is_refused_naming_key_and_value(raw, dotted, value, key, shown):
    with pytest.raises(ParamsError) as info:
        full_check(invalid_params(raw, dotted, value, key))
    text = str(info.value)
    assert "\n" not in text and text.startswith("params.yaml: ")
    assert f"'{key}'" in text, text
    if shown is not None:
        assert f"got {shown}" in text, text
    if value is None:  # a misspelled key lists the keys its section allows
        assert "unknown params key" in text and "allowed keys" in text, text
        assert dotted.rsplit(".", 1)[-1].split("[")[0] in text


@pytest.mark.parametrize("dotted,value,key,shown", STAGE_INVALID, ids=STAGE_IDS)
def test_check_params_stage_exits_2_with_one_error_line(raw, tmp_path, dotted, value, key, shown):
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy(ROOT / "contract.yaml", work / "contract.yaml")
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    bad = work / "bad-params.yaml"
    bad.write_text(yaml.safe_dump(invalid_params(raw, dotted, value, key), sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "check_params.py"), "--params", bad.name],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if " ERROR " in line]
    assert len(errors) == 1, proc.stderr
    assert bad.name in errors[0] and f"'{key}'" in errors[0], errors[0]
    if shown is not None:
        assert f"got {shown}" in errors[0], errors[0]
    assert not (work / "metrics" / "params_check.json").exists()


def test_repository_params_pass_every_check(raw):
    assert load_params(ROOT / "params.yaml") == params_from_dict(raw)
    summary = full_check(raw)
    assert summary["file"] == "params.yaml" and summary["valid"] is True


def test_check_params_stage_writes_its_summary(tmp_path):
    for name in ("params.yaml", "contract.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "check_params.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "metrics" / "params_check.json").read_text())
    assert summary["file"] == "params.yaml" and summary["valid"] is True


@pytest.mark.parametrize(
    "dotted,value,fragment",
    [
        ("evaluate.gate.max_wape", True, "'evaluate.gate.max_wape' must be a number, got True"),
        ("train.search.folds", 2.0, "'train.search.folds' must be an integer, got 2.0"),
        ("features.calendar", "yes", "'features.calendar' must be true or false, got 'yes'"),
        ("problem.target", 3, "'problem.target' must be a string, got 3"),
        ("drift.alpha", 1, "'drift.alpha' must be in (0, 1), got 1"),
        ("drift.numeric_effect", math.inf, "'drift.numeric_effect' must be a finite number"),
        ("backtest.error_factor", -math.inf, "'backtest.error_factor' must be a finite number"),
        ("evaluate.gate.min_gain_pct", math.nan, "'evaluate.gate.min_gain_pct' must be a finite"),
        ("compute.threads", 0, "'compute.threads' must be >= 1, got 0"),
        ("train.search.n_jobs", -2, "'train.search.n_jobs' must be >= 1"),
        ("features.lags", [], "'features.lags' must hold at least 1 item(s), got []"),
        ("features.rolling[1]", 0, "'features.rolling[1]' must be >= 1, got 0"),
        ("features.level_window", 0, "'features.level_window' must be >= 1, got 0"),
        ("drift.key_columns", [], "'drift.key_columns' must hold at least 1 item(s)"),
        ("problem.horizon", 3, "'problem.horizon' must be 1"),
        ("train.seed", -1, "'train.seed' must be in [0, 4294967295], got -1"),
        ("baseline.rules[0]", "naive", "'baseline.rules[0]' must be one of 'seasonal_naive'"),
        ("drift.current_end", "2010-01", "'drift.current_end' must not be before current_start"),
        ("backtest.end", "2004-12", "'backtest.end' must be after first_train_end 2004-12"),
        ("backtest.first_train_end", "1999-12", "'backtest.first_train_end' must be after"),
        ("backtest.policies[2].name", "every_12", "'backtest.policies[2].name' must be unique"),
        ("backtest.policies[1].every_periods", 0, "'backtest.policies[1].every_periods' must be"),
        ("backtest.policies", [], "'backtest.policies' must hold at least 1 item(s)"),
        ("windows.test_end", "2011-01", "'windows.test_end' must not be before test_start"),
        ("windows.test_start", 201112, "'windows.test_start' must be a month 'YYYY-MM'"),
        ("retrain.test_periods", 0, "'retrain.test_periods' must be >= 1, got 0"),
        ("paths.model", "", "'paths.model' must not be empty, got ''"),
    ],
)
def test_constraint_is_named_with_the_value(raw, dotted, value, fragment):
    with pytest.raises(ParamsError) as info:
        params_from_dict(edit(raw, dotted, value), "params.yaml")
    assert fragment in str(info.value), str(info.value)


def test_an_integer_is_a_number_and_n_jobs_may_be_minus_one(raw):
    data = edit(edit(raw, "evaluate.gate.max_wape", 1), "backtest.n_jobs", -1)
    p = params_from_dict(data)
    assert p.evaluate.gate.max_wape == 1.0 and isinstance(p.evaluate.gate.max_wape, float)
    assert p.backtest.n_jobs == -1
    assert params_from_dict(edit(raw, "evaluate.gate.min_gain_pct", -50)).evaluate.gate


def test_every_problem_is_reported_on_one_line(raw):
    data = edit(edit(raw, "drift.alpha", 2.0), "train.search.folds", "three")
    data = edit(data, "features.scale", "log")
    with pytest.raises(ParamsError) as info:
        params_from_dict(data, "params.yaml")
    text = str(info.value)
    assert "\n" not in text and text.count("; ") == 2
    for key in ("features.scale", "train.search.folds", "drift.alpha"):
        assert f"'{key}'" in text


def test_long_values_are_cut_to_80_characters(raw):
    with pytest.raises(ParamsError) as info:
        params_from_dict(edit(raw, "drift.alpha", "x" * 500))
    shown = str(info.value).split("got ", 1)[1]
    assert len(shown) == 80 and shown.endswith("...")


def test_unknown_key_lists_the_allowed_keys(raw):
    with pytest.raises(ParamsError) as info:
        params_from_dict(edit(raw, "evaluate.gate.max_wap", 0.1))
    text = str(info.value)
    assert "unknown params key 'evaluate.gate.max_wap'" in text
    assert "allowed keys of 'evaluate.gate': max_wape, min_gain_pct" in text


def test_specs_are_frozen_and_take_positional_fields(params):
    w = WindowSpec("2001-01", "2003-12", "2004-01", "2004-12")
    assert w.train_end == "2003-12"
    with pytest.raises(ValidationError):
        w.train_end = "2004-01"  # type: ignore[misc]
    with pytest.raises(ValueError, match="must not be before train_start"):
        WindowSpec("2001-01", "2000-12", "2004-01", "2004-12")
    assert PolicySpec("p", "every", 3).every_periods == 3
    assert GateSpec(max_wape=0.1, min_gain_pct=5).min_gain_pct == 5.0
    assert params.train.model_copy(update={"seed": 7}).seed == 7


def test_the_estimator_names_are_the_model_factory_names():
    assert set(typing.get_args(TrainSpec.model_fields["estimator"].annotation)) == set(ESTIMATORS)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("train:\n  seed: 1\n  seed: 2\n", "line 3, column 3: duplicate key 'train.seed'"),
        ("a: &x 1\nb: *x\n", "line 1: YAML anchor '&x' is not allowed"),
        ("problem: [unclosed\n", "not valid YAML"),
    ],
)
def test_params_yaml_refuses_duplicates_and_aliases(tmp_path, text, fragment):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=re.escape(fragment)) as info:
        load_params(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- check_params


@pytest.mark.parametrize(
    "dotted,value,fragment",
    [
        ("train.hyperparameters.n_trees", 10, "'train.hyperparameters.n_trees' must name a"),
        ("train.hyperparameters.max_iter", True, "'train.hyperparameters.max_iter' must be an int"),
        ("train.hyperparameters.max_iter", 0, "'train.hyperparameters.max_iter' must be an int"),
        ("train.hyperparameters.early_stopping", "sometimes", "early_stopping' must be a str"),
        ("train.hyperparameters.random_state", 3, "is set from train.seed"),
        ("train.search.space.learning_rate", [0.1, -1], "'train.search.space.learning_rate[1]'"),
        ("train.search.space.depth", [1, 2], "'train.search.space.depth' must name a parameter"),
        ("drift.key_columns", ["target", "lag_99"], "'drift.key_columns[1]' must be a monitored"),
        ("features.exogenous", ["volume", "volumen"], "'features.exogenous[1]' must be a column"),
        ("problem.time.year_column", "date", "year_column' must be a column of type integer"),
    ],
)
def test_check_params_beyond_the_schema(raw, dotted, value, fragment):
    with pytest.raises(ParamsError) as info:
        full_check(edit(raw, dotted, value))
    assert fragment in str(info.value), str(info.value)


def test_hyperparameters_of_another_estimator(raw):
    data = edit(raw, "train.estimator", "Ridge")
    data = edit(data, "train.hyperparameters", {"alpha": 1.0, "solver": "auto"})
    data = edit(data, "train.search.space", {"alpha": [0.1, 10]})
    assert full_check(data)["valid"] is True
    with pytest.raises(ParamsError, match=r"'train\.search\.space\.alpha\[0\]'.*got -1"):
        full_check(edit(data, "train.search.space.alpha", [-1, 1]))


@pytest.mark.parametrize(
    "update",
    [
        {},
        {"calendar": False, "segment_feature": False},
        {"scale": "none", "lags": [3, 1, 3], "rolling": [], "exogenous": []},
        {"exogenous": ["median", "volume", "median"], "rolling": [12, 2]},
    ],
)
def test_feature_names_match_the_built_features(params, update):
    spec = FeatureSpec(**{**params.features.model_dump(), **update})
    windows = WindowSpec("2001-01", "2003-12", "2004-01", "2004-12")
    frame, _ = build_features(make_panel(), params.problem, spec, windows)
    assert feature_names(params.problem, spec) == feature_columns(frame, params.problem)
    assert monitored_columns(params.problem, spec)[-2:] == [TARGET, PREDICTION]
