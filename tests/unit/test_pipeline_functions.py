"""The stage logic in memory: each ``panelcast.pipeline`` function takes and returns data.

The whole chain (validate, features, baseline, train, evaluate, drift, predict) runs on a
tiny synthetic panel without a file written by a stage script, so behaviour is tested where
it lives and the integration tests only need to prove the wiring.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from panelcast.core.config import params_from_dict
from panelcast.core.errors import DataError, ModelFileError, ParamsError
from panelcast.core.periods import MONTHLY, PREDICTION, TARGET, WINDOW
from panelcast.data.contract import load_contract
from panelcast.data.prepare import prepare_panel
from panelcast.modelling.features import build_features, feature_columns
from panelcast.modelling.model import load_model, loads_model
from panelcast.pipeline.baseline import baseline
from panelcast.pipeline.drift import drift
from panelcast.pipeline.evaluate import evaluate
from panelcast.pipeline.predict import predict, source_columns
from panelcast.pipeline.train import (
    chosen_hyperparameters,
    read_training_data,
    train,
    train_on,
    training_data,
)
from panelcast.pipeline.validate import refusal, validate

from ..conftest import ROOT, make_panel

CONTRACT = """
key: [city, year, month]
min_rows: 10
extra_columns: error
time: {not_before: 2000-01, not_after: 2010-12}
columns:
  city: {type: string, allowed: [A, B, C]}
  year: {type: integer, min: 1990, max: 2100}
  month: {type: integer, min: 1, max: 12}
  sales: {type: number, min: 0}
  volume: {type: number, min: 0}
  median: {type: number, min: 0}
  listings: {type: number, min: 0}
  inventory: {type: number, min: 0}
  date: {type: number}
"""


def small_params(single: bool = False, **windows):
    """The real params.yaml shrunk to a 6-year synthetic panel (``single``: no segment)."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data = copy.deepcopy(data)
    if single:
        del data["problem"]["segment"]
    data["windows"] = {
        "train_start": "2000-01",
        "train_end": "2004-06",
        "test_start": "2004-07",
        "test_end": "2005-12",
        **windows,
    }
    data["features"]["lags"] = [1, 2, 3, 12]
    data["features"]["rolling"] = [3, 6]
    search = data["train"]["search"]
    search.update(folds=2, fold_periods=6, space={"learning_rate": [0.05, 0.1]})
    data["train"]["hyperparameters"]["max_iter"] = 30
    data["drift"]["current_start"], data["drift"]["current_end"] = "2004-07", "2005-12"
    data["predict"]["calibration_periods"] = 6
    return params_from_dict(data)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Every stage function in order on the same tiny panel."""
    params = small_params()
    raw = make_panel(years=6)
    contract_file = tmp_path_factory.mktemp("contract") / "contract.yaml"
    contract_file.write_text(CONTRACT)
    contract = load_contract(contract_file, calendar=params.problem.calendar)
    table, report, _ = validate(
        raw, contract, params.problem, params.prepare, "snap.parquet", "contract.yaml"
    )
    features, _ = build_features(table, params.problem, params.features, params.windows)
    rules, rule_metrics = baseline(table, features, params)
    trained = train(features, "0" * 64, params)
    model = loads_model(trained.model_bytes)
    cols = trained.metadata["features"]
    evaluation = evaluate(features, rules, rule_metrics, model, cols, params)
    report_drift, effects, _ = drift(
        features, model, cols, trained.reference, params.drift, params.problem.calendar
    )
    return {
        "params": params,
        "raw": raw,
        "contract": contract,
        "validated": table,
        "validate_report": report,
        "features": features,
        "rules": rules,
        "rule_metrics": rule_metrics,
        "trained": trained,
        "model": model,
        "evaluation": evaluation,
        "drift": report_drift,
        "effects": effects,
    }


def test_validate_passes_a_good_table_sorted_by_key(chain):
    assert chain["validate_report"]["passed"] is True
    table = chain["validated"]
    assert len(table) == len(chain["raw"])
    assert table[["city", "year", "month"]].equals(
        table[["city", "year", "month"]].sort_values(["city", "year", "month"])
    )


def test_validate_refuses_a_broken_table_and_names_the_column(chain):
    bad = chain["raw"].copy()
    bad.loc[3, "sales"] = -5.0
    params = chain["params"]
    table, report, text = validate(
        bad, chain["contract"], params.problem, params.prepare, "snap.parquet", "contract.yaml"
    )
    assert table is None and report["passed"] is False
    error = refusal(report, text, "snap.parquet", "contract.yaml")
    assert isinstance(error, DataError)
    assert "sales" in str(error) and "-5" in str(error) and "snap.parquet" in str(error)


def test_baseline_scores_every_rule_on_the_test_window(chain):
    metrics = chain["rule_metrics"]
    assert set(metrics["rules"]) == set(chain["params"].baseline.rules)
    assert metrics["best_rule"] in metrics["rules"]
    assert len(chain["rules"]) == len(chain["features"])


def test_train_reports_what_the_deployed_model_uses(chain):
    trained = chain["trained"]
    search = trained.metrics["search"]
    assert search is not None and len(search["candidates"]) == 2
    assert trained.metrics["chosen"]["learning_rate"] == search["best_params"]["learning_rate"]
    assert trained.metrics["chosen"]["max_iter"] == 30  # configured, not searched
    assert trained.metadata["features"] == feature_columns(
        chain["features"], chain["params"].problem
    )
    assert "columns" in trained.reference and "version" in trained.reference


def test_chosen_hyperparameters_without_search_are_the_configured_ones():
    assert chosen_hyperparameters({"a": 1}, {"search": None}) == {"a": 1}
    report = {"search": {"best_params": {"a": 2}}}
    assert chosen_hyperparameters({"a": 1, "b": 3}, report) == {"a": 2, "b": 3}


def test_train_is_byte_identical_for_the_same_inputs(chain):
    again = train(chain["features"], "0" * 64, chain["params"])
    assert again.model_bytes == chain["trained"].model_bytes
    assert again.metrics == chain["trained"].metrics


def test_evaluate_scores_the_test_rows_against_the_best_rule(chain):
    ev = chain["evaluation"]
    test_rows = chain["features"][chain["features"][WINDOW] == "test"]
    assert len(ev.predictions) == len(test_rows)
    assert ev.predictions[PREDICTION].notna().all()
    assert ev.metrics["model"]["n"] == int(test_rows[TARGET].notna().sum())
    assert ev.metrics["best_rule"]["name"] == chain["rule_metrics"]["best_rule"]
    assert isinstance(ev.passed, bool)
    assert set(ev.plots) == {
        "predicted_vs_actual.csv",
        "error_over_time.csv",
        "error_by_segment.csv",
        "intervals_over_time.csv",
    }


def evaluate_chain(chain, rules=None, rule_metrics=None):
    """The evaluate stage on the chain's outputs, with the rule table or metrics replaced."""
    return evaluate(
        chain["features"],
        chain["rules"] if rules is None else rules,
        chain["rule_metrics"] if rule_metrics is None else rule_metrics,
        chain["model"],
        chain["trained"].metadata["features"],
        chain["params"],
    )


def test_evaluate_refuses_a_baseline_without_its_best_rule(chain):
    forged = {k: v for k, v in chain["rule_metrics"].items() if k != "best_rule"}
    with pytest.raises(DataError, match="best_rule"):
        evaluate_chain(chain, rule_metrics=forged)


def test_evaluate_refuses_rule_rows_that_do_not_match(chain):
    with pytest.raises(DataError, match="different test rows"):
        evaluate_chain(chain, rules=chain["rules"].iloc[:-1])


@pytest.mark.parametrize(
    "forge",
    [
        lambda m: m["rules"][m["best_rule"]].update(mae=m["rules"][m["best_rule"]]["mae"] * 10),
        lambda m: m.update(best_rule=max(m["rules"], key=lambda r: m["rules"][r]["mae"])),
    ],
    ids=["score", "best_rule"],
)
def test_evaluate_recomputes_the_rule_scores_and_refuses_a_forged_baseline(chain, forge):
    forged = copy.deepcopy(chain["rule_metrics"])
    forge(forged)
    with pytest.raises(DataError, match="do not match the rule forecasts") as info:
        evaluate_chain(chain, rule_metrics=forged)
    assert "recorded" in str(info.value) and "recomputed" in str(info.value)


def test_a_model_file_is_checked_against_the_sha256_in_its_metadata(chain, tmp_path):
    path = tmp_path / "model.skops"
    path.write_bytes(chain["trained"].model_bytes)
    metadata = chain["trained"].metadata
    assert type(load_model(path, metadata, "metadata.json")) is type(chain["model"])
    other = train(chain["features"].iloc[30:], "other data", chain["params"]).model_bytes
    assert other != chain["trained"].model_bytes
    path.write_bytes(other)  # another valid model made of trusted types
    with pytest.raises(ModelFileError, match="does not match the 'sha256'"):
        load_model(path, metadata, "metadata.json")
    with pytest.raises(ModelFileError, match="no 'sha256'"):
        load_model(path, {"features": []}, "metadata.json")


def test_drift_reports_every_monitored_column(chain):
    report = chain["drift"]
    monitored = set(chain["trained"].metadata["features"]) | {TARGET, PREDICTION}
    assert set(report["columns"]) == monitored
    assert isinstance(report["drifted"], bool)
    assert list(chain["effects"].columns) == ["column", "effect", "missing_effect", "drifted"]


def test_drift_window_outside_the_data_names_the_params_keys(chain):
    spec = small_params().drift
    features = chain["features"]
    early = features[features["period"] < "2003-01"]
    with pytest.raises(ParamsError, match="drift.current_start"):
        drift(early, chain["model"], chain["trained"].metadata["features"], {}, spec, MONTHLY)


def test_features_refuse_a_test_window_without_data_naming_the_keys(chain):
    params = small_params(test_start="2009-01", test_end="2009-12")
    with pytest.raises(ParamsError, match="windows.test_start"):
        build_features(chain["validated"], params.problem, params.features, params.windows)


def test_pipeline_functions_write_no_files(chain, tmp_path, monkeypatch):
    """The functions only take and return data: running one in an empty folder adds nothing."""
    monkeypatch.chdir(tmp_path)
    baseline(chain["validated"], chain["features"], chain["params"])
    assert list(tmp_path.iterdir()) == []
    assert isinstance(chain["evaluation"].predictions, pd.DataFrame)


def test_drift_window_error_names_the_span_of_the_data(chain):
    early = chain["features"][chain["features"]["period"] < "2003-01"]
    with pytest.raises(ParamsError, match=r"which spans 2000-02\.\.2002-12"):
        drift(early, chain["model"], [], {}, chain["params"].drift, MONTHLY)


def run_predict(chain, table=None, features=None, params=None):
    """The predict stage on the chain's outputs (or on another table and params)."""
    return predict(
        chain["validated"] if table is None else table,
        chain["features"] if features is None else features,
        chain["model"],
        chain["trained"].metadata["features"],
        chain["evaluation"].predictions,
        chain["evaluation"].metrics,
        "0" * 64,
        chain["params"] if params is None else params,
    )


def test_predict_forecasts_the_period_after_the_data(chain, caplog):
    with caplog.at_level(logging.INFO, logger="panelcast"):
        out = run_predict(chain)
    params = chain["params"]
    assert out.metrics["forecast_period"] == "2006-01"
    assert out.metadata["last_period"] == "2005-12"
    # the latest out-of-sample residuals: those of the test window (the chain has no CV ones)
    calibration = out.metrics["calibration"]
    assert (calibration["start"], calibration["end"], calibration["residuals"]) == (
        "2005-07",
        "2005-12",
        18,
    )
    assert out.forecasts["city"].tolist() == ["A", "B", "C"]
    assert (out.forecasts["period"] == "2006-01").all() and out.forecasts["forecast"].gt(0).all()
    assert source_columns(params) == [
        "city",
        "year",
        "month",
        "sales",
        "volume",
        "median",
        "listings",
        "inventory",
    ]
    assert list(out.serving_state.columns) == source_columns(params)
    assert out.metadata["input_schema"] == source_columns(params)
    assert "calibrated on the 18 out-of-sample residuals of 2005-07..2005-12" in caplog.text


def test_a_single_series_goes_through_every_stage_function(chain):
    params = small_params(single=True)
    assert params.problem.segment_column == "series"
    raw = chain["raw"]
    table, _ = prepare_panel(
        raw[raw["city"] == "B"].drop(columns="city"), params.problem, params.prepare
    )
    assert "series" in table.columns and table["series"].nunique() == 1
    features, _ = build_features(table, params.problem, params.features, params.windows)
    rules, rule_metrics = baseline(table, features, params)
    trained = train(features, "0" * 64, params)
    model = loads_model(trained.model_bytes)
    cols = trained.metadata["features"]
    evaluation = evaluate(features, rules, rule_metrics, model, cols, params)
    assert evaluation.metrics["segments"] == 1
    report, _, _ = drift(features, model, cols, trained.reference, params.drift, MONTHLY)
    assert isinstance(report["drifted"], bool)
    out = predict(
        table, features, model, cols, evaluation.predictions, evaluation.metrics, "0" * 64, params
    )
    assert out.forecasts["series"].tolist() == table["series"].unique().tolist()
    assert out.forecasts["period"].tolist() == ["2006-01"]
    assert np.isfinite(out.forecasts["forecast"]).all()
    assert source_columns(params)[:4] == ["series", "year", "month", "sales"]
    assert out.metadata["segment"] == "series" and out.metrics["segments"] == 1


def test_train_from_the_feature_file_is_train_in_memory(chain, tmp_path):
    """The train stage reads the labelled training rows only, filtered in the reader: the
    same model, metadata, reference and metrics as a fit on the whole table read back
    (the global strategy: the others read the whole training window)."""
    params = chain["params"]
    params = params.model_copy(
        update={"train": params.train.model_copy(update={"strategy": "global"})}
    )
    features = chain["features"].copy()
    features.loc[features.index[::17], TARGET] = np.nan  # some training rows without target
    path = tmp_path / "features.parquet"
    features.to_parquet(path, index=False)
    data = read_training_data(path, params)
    # skops writes a repeated string object once: a model file depends on whether the
    # column names were read back, so both fits see the table read back
    features = pd.read_parquet(path)
    whole = training_data(features, params)
    # the float features stay arrow arrays (their copies share memory): the same values
    assert (data.X.dtypes == pd.ArrowDtype(pa.float64())).sum() > 10
    numpy_x = data.X.astype({c: "float64" for c in data.X.select_dtypes("double[pyarrow]")})
    pd.testing.assert_frame_equal(numpy_x, whole.X, check_exact=True)
    pd.testing.assert_frame_equal(data.keys, whole.keys, check_exact=True)
    assert (data.segments, data.unlabelled) == (whole.segments, whole.unlabelled)
    assert data.unlabelled > 0
    got = train_on(data, "0" * 64, params)
    want = train(features, "0" * 64, params)
    assert got.model_bytes == want.model_bytes
    assert (got.metadata, got.reference, got.metrics, got.manifest) == (
        want.metadata,
        want.reference,
        want.metrics,
        want.manifest,
    )


def test_evaluate_on_the_test_rows_alone_is_evaluate_on_the_whole_table(chain):
    """The evaluate stage reads the test rows only when one model forecasts them all."""
    features, rules = chain["features"], chain["rules"]
    alone = evaluate(
        features[features[WINDOW] == "test"].reset_index(drop=True),
        rules[rules[WINDOW] == "test"].reset_index(drop=True),
        chain["rule_metrics"],
        chain["model"],
        chain["trained"].metadata["features"],
        chain["params"],
    )
    whole = chain["evaluation"]
    pd.testing.assert_frame_equal(alone.predictions, whole.predictions, check_exact=True)
    assert alone.metrics == whole.metrics


def test_baseline_needs_only_the_keys_window_and_target_of_the_features(chain):
    params, problem = chain["params"], chain["params"].problem
    keys = chain["features"][[problem.segment_column, "t", WINDOW, TARGET]]
    table = chain["validated"][[problem.segment_column, *problem.time.columns, problem.target]]
    rules, metrics = baseline(table, keys, params)
    pd.testing.assert_frame_equal(rules, chain["rules"], check_exact=True)
    assert metrics == chain["rule_metrics"]


def test_the_drift_reference_holds_the_deployed_models_forecasts(chain):
    """With segments routed to their own models, the drift reference's prediction column
    profiles those models' in-sample forecasts (the drift stage monitors their forecasts
    of the current window), every other column the same rows."""
    params = chain["params"]

    def with_train(**changes):
        return params.model_copy(update={"train": params.train.model_copy(update=changes)})

    own = with_train(
        strategy="per_segment",
        per_segment=params.train.per_segment.model_copy(update={"families": ["seasonal_naive"]}),
    )
    routed = train(chain["features"], "0" * 64, own)
    alone = train(chain["features"], "0" * 64, with_train(strategy="global"))
    assert set(routed.manifest["families"]) == {"seasonal_naive"}
    columns = routed.reference["columns"]
    assert columns.keys() == alone.reference["columns"].keys()
    assert columns[PREDICTION] != alone.reference["columns"][PREDICTION]
    same = [c for c in columns if c != PREDICTION and columns[c] == alone.reference["columns"][c]]
    assert len(same) == len(columns) - 1
