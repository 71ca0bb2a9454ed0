"""Params checked against what they name and against the prepared panel: every mistake is
one line naming the params key, its value and what would fit."""

from __future__ import annotations

import copy

import pytest
import yaml

from panelcast.core.config import params_from_dict
from panelcast.core.errors import ParamsError
from panelcast.data.contract import Contract
from panelcast.pipeline.check_data import check_data, data_problems
from panelcast.pipeline.check_params import contract_column_problems, segment_encoding_problems

from ..conftest import ROOT, apply_dotted, make_panel


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def with_(raw: dict, **dotted) -> dict:
    """A copy of ``raw`` with ``a__b=value`` keys set (``a.b``)."""
    return apply_dotted(copy.deepcopy(raw), {k.replace("__", "."): v for k, v in dotted.items()})


def small(raw: dict, **dotted):
    """Params fitted to make_panel(years=5): 2000-01..2004-12."""
    base = {
        "windows": {
            "train_start": "2000-01",
            "train_end": "2003-12",
            "test_start": "2004-01",
            "test_end": "2004-12",
        },
        "drift": {**raw["drift"], "current_start": "2004-01", "current_end": "2004-12"},
        "backtest": {
            **raw["backtest"],
            "first_train_start": "2000-01",
            "first_train_end": "2002-12",
            "end": "2004-12",
        },
        "features": {**raw["features"], "lags": [1, 2, 12], "rolling": [3], "level_window": 12},
        "train": {**raw["train"], "search": {**raw["train"]["search"], "folds": 2}},
        "predict": {**raw["predict"], "calibration_periods": 6},
    }
    data = {**copy.deepcopy(raw), **base}
    return params_from_dict(with_(data, **dotted))


def test_params_that_fit_the_panel_pass(raw):
    summary = check_data(small(raw), make_panel(years=5))
    assert summary["first_period"] == "2000-01" and summary["last_period"] == "2004-12"
    assert summary["periods"] == 60 and summary["segments"] == 3


@pytest.mark.parametrize(
    "edit,fragment",
    [
        ({"windows__test_end": "2005-06"}, "'windows.test_end' must be within 2000-02..2004-12"),
        (
            {"features__lags": [1, 60]},
            "'features.lags' reads 60 months of history, more than the 47 months",
        ),
        (
            {"train__search__folds": 4},
            "'train.search.folds' x 'train.search.fold_periods' = 4 x 12 periods do not fit",
        ),
        ({"retrain__test_periods": 80}, "'retrain.test_periods' must be less than"),
        ({"drift__current_start": "2006-01", "drift__current_end": "2006-02"}, "drift.current"),
        ({"backtest__validation_periods": 40}, "'backtest.validation_periods' must be less"),
        ({"backtest__end": "2007-12"}, "'backtest.end' must be within"),
    ],
)
def test_each_misfit_names_the_key_and_what_fits(raw, edit, fragment):
    with pytest.raises(ParamsError) as info:
        check_data(small(raw, **edit), make_panel(years=5))
    text = str(info.value)
    assert fragment in text, text
    assert "\n" not in text


def test_a_panel_without_any_target_is_refused_naming_the_column(raw):
    panel = make_panel(years=5).assign(sales=float("nan"))
    with pytest.raises(ParamsError, match="'problem.target'.*no observed value"):
        data_problems(small(raw), panel)


def test_short_segments_are_a_warning_not_an_error(raw):
    panel = make_panel(years=5)
    late = (panel["city"] == "C") & (panel["year"] < 2004)
    errors, warnings = data_problems(small(raw), panel[~late])
    assert errors == []
    assert any("C (12 months)" in w for w in warnings), warnings


def contract(columns: dict) -> Contract:
    return Contract.model_validate(
        {"columns": columns, "key": [next(iter(columns))], "min_rows": 0, "extra_columns": "warn"}
    )


def test_columns_are_followed_through_wide_and_aggregate(raw):
    data = with_(
        raw,
        problem__segment="meat",
        problem__target="production",
        problem__time={"frequency": "M", "column": "date"},
        features__exogenous=[],
        prepare__wide={"columns": ["beef", "pork"], "segment": "meat", "value": "production"},
    )
    wide = contract(
        {"date": {"type": "string"}, "beef": {"type": "number"}, "pork": {"type": "number"}}
    )
    assert contract_column_problems(params_from_dict(data), wide, "c.yaml") == []
    wrong = with_(data, problem__segment="kind")
    problems = contract_column_problems(params_from_dict(wrong), wide, "c.yaml")
    assert any("'problem.segment' must be 'meat'" in p for p in problems), problems
    events = with_(
        raw,
        problem__time={"frequency": "M", "column": "at"},
        problem__target="amount",
        features__exogenous=["amount_missing"],
        prepare__aggregate={"amount": "sum"},
    )
    table = contract(
        {"at": {"type": "datetime"}, "city": {"type": "string"}, "amount": {"type": "number"},
         "amount_missing": {"type": "number"}}
    )  # fmt: skip
    problems = contract_column_problems(params_from_dict(events), table, "c.yaml")
    assert problems == [
        "'features.exogenous[0]' must be a column prepare.aggregate keeps (amount): add it "
        "there (for example amount_missing: sum), got 'amount_missing'"
    ], problems


def test_a_reserved_segment_name_and_a_text_target_are_refused(raw):
    table = contract(
        {"city": {"type": "string"}, "year": {"type": "integer"}, "month": {"type": "integer"},
         "sales": {"type": "string"}, "period": {"type": "string"}}
    )  # fmt: skip
    params = params_from_dict(with_(raw, problem__segment="period", features__exogenous=[]))
    problems = contract_column_problems(params, table, "c.yaml")
    assert any("must not be one of the feature table's own columns" in p for p in problems)
    assert any("'problem.target' must be a column of type integer or number" in p for p in problems)


MANY = [f"city{i:03d}" for i in range(300)]


@pytest.fixture(scope="module")
def many_segments():
    """A panel of 300 segments: more than HistGradientBoosting's 255 categories."""
    return make_panel(segments=MANY, years=5)


def test_native_encoding_with_more_segments_than_hist_gradient_boosting_takes(raw, many_segments):
    with pytest.raises(ParamsError) as info:
        check_data(small(raw, train__segment_encoding="native"), many_segments)
    text = str(info.value)
    assert (
        "'train.segment_encoding' must not be native with more than 255 segments for "
        "HistGradientBoostingRegressor" in text
    ), text
    assert "use auto or target_mean" in text
    assert "got native with 300 segments with an observed target in the prepared panel" in text
    assert "\n" not in text


@pytest.mark.parametrize(
    "edit",
    [
        {"train__segment_encoding": "auto"},
        {"train__segment_encoding": "target_mean"},
        {"train__segment_encoding": "none"},
        {"train__segment_encoding": "native", "train__estimator": "Ridge"},  # one-hot: no cap
        {"train__segment_encoding": "native", "features__segment_feature": False},
    ],
)
def test_encodings_that_work_with_many_segments_pass(raw, many_segments, edit):
    errors, _ = data_problems(small(raw, **edit), many_segments)
    assert errors == []


def test_native_encoding_counts_segments_with_an_observed_target(raw, many_segments):
    """Segments without any observed target are no rows of the model: not counted."""
    unlabelled = many_segments["city"].isin(MANY[255:])
    panel = many_segments.assign(sales=many_segments["sales"].mask(unlabelled))
    errors, _ = data_problems(small(raw, train__segment_encoding="native"), panel)
    assert errors == []
    one_more = many_segments["city"].isin(MANY[256:])
    panel = many_segments.assign(sales=many_segments["sales"].mask(one_more))
    errors, _ = data_problems(small(raw, train__segment_encoding="native"), panel)
    assert len(errors) == 1 and "got native with 256 segments" in errors[0], errors


def test_native_limit_follows_max_bins(raw):
    panel = make_panel(segments=MANY[:40], years=5)
    hyper = {**raw["train"]["hyperparameters"], "max_bins": 31}
    params = small(raw, train__segment_encoding="native", train__hyperparameters=hyper)
    errors, _ = data_problems(params, panel)
    assert len(errors) == 1 and "more than 31 segments" in errors[0], errors
    assert "max_bins = 31" in errors[0] and "got native with 40 segments" in errors[0]


def with_segments(expected, allowed=None, warn=()) -> Contract:
    city = {"type": "string", **({"allowed": allowed} if allowed else {})}
    return Contract.model_validate(
        {
            "columns": {"city": city, "year": {"type": "integer"}, "month": {"type": "integer"},
                        "sales": {"type": "number"}},
            "key": ["city", "year", "month"],
            "min_rows": 0,
            "extra_columns": "warn",
            "completeness": {"expected_segments": expected, "warn": list(warn)},
        }
    )  # fmt: skip


def test_check_params_refuses_native_when_the_contract_requires_too_many_segments(raw):
    native = params_from_dict(with_(raw, train__segment_encoding="native", features__exogenous=[]))
    for contract_ in (with_segments(MANY), with_segments("allowed", allowed=MANY)):
        problems = segment_encoding_problems(native, contract_, "c.yaml")
        assert len(problems) == 1, problems
        assert problems[0].startswith(
            "'train.segment_encoding' must not be native with more than 255 segments"
        )
        assert problems[0].endswith(
            "got native with 300 segments that the data contract c.yaml requires "
            "(completeness.expected_segments)"
        )
    # what the contract does not require, the data may not hold: check_data counts them
    assert segment_encoding_problems(native, with_segments(MANY[:255]), "c.yaml") == []
    warned = with_segments(MANY, warn=["expected_segments"])
    assert segment_encoding_problems(native, warned, "c.yaml") == []
    allowed_only = with_segments(None, allowed=MANY)
    assert segment_encoding_problems(native, allowed_only, "c.yaml") == []
    auto = params_from_dict(with_(raw, features__exogenous=[]))
    assert segment_encoding_problems(auto, with_segments(MANY), "c.yaml") == []
