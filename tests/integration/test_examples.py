"""Every example of ``examples/`` (another real table, pointed at by its params.yaml and
contract.yaml alone) runs end to end with `dvc repro` in a scratch copy, as
``make example NAME=...`` does; and each configuration mistake of the issue stops with one
line naming the params key, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from panelcast.core.config import load_params
from panelcast.examples import available, scratch_copy

from ..conftest import PIPELINE_STAGES, ROOT, run, set_params, stages_run, up_to_date

pytestmark = pytest.mark.slow

EXAMPLES = available(ROOT)
#: What each example must show (shape, frequency, segments of the prepared panel).
EXPECTED = {
    "economics": {"frequency": "M", "segments": 1},
    "economics_long": {"frequency": "M", "segments": 5},
    "meat": {"frequency": "M", "segments": 7},
    "huron": {"frequency": "Y", "segments": 1},
    "macrodata": {"frequency": "Q", "segments": 1},
    "co2": {"frequency": "M", "segments": 1},
}
#: Keys every stage's metrics file must hold (besides its own figures).
METRIC_KEYS = {
    "params_check": ["valid"],
    "collect": ["source", "rows", "time_span"],
    "validate": ["passed", "prepare", "time"],
    "params_fit": ["first_period", "last_period", "periods", "segments"],
    "features": ["rows", "rows_by_window", "features"],
    "baseline": ["rules", "best_rule", "best"],
    "train": ["train_rows", "chosen", "estimator"],
    "evaluate": ["model", "best_rule", "gain_pct", "gate_passed", "per_segment"],
    "predict": ["model_version", "forecast_period", "segments", "calibration"],
    "drift": ["drifted", "reasons", "columns"],
    "backtest": ["replayed", "named_periods", "policies"],
}


def test_the_examples_are_the_documented_ones():
    assert set(EXAMPLES) == set(EXPECTED), EXAMPLES
    for name in EXAMPLES:
        assert sorted(p.name for p in (ROOT / "examples" / name).iterdir()) == [
            "contract.yaml",
            "params.yaml",
        ]


def shorten_backtest(repo: Path, periods: int = 6) -> None:
    """The copy's backtest replays ``periods`` periods with two policies (as the default
    pipeline's tests do: the full replays take minutes; `make example` runs them)."""
    params = load_params(repo / "params.yaml")
    backtest, calendar = params.backtest, params.problem.calendar
    end = min(calendar.parse(backtest.end), calendar.parse(backtest.first_train_end) + periods)
    set_params(
        repo,
        {
            "backtest.end": calendar.format(end),
            "backtest.policies": [
                {"name": "never", "kind": "never"},
                {"name": "on_alarm", "kind": "on_alarm"},
            ],
            "cycle.policy": "on_alarm",  # the cycle's policy must be one the backtest replays
        },
    )


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_end_to_end(name, tmp_path):
    repo = scratch_copy(ROOT, name, tmp_path / name)
    shorten_backtest(repo)
    run(["panelcast", "check"], repo)
    proc = run(["dvc", "repro"], repo, timeout=1200)
    assert stages_run(proc.stdout) == set(PIPELINE_STAGES), proc.stdout[-3000:]
    assert "Traceback" not in proc.stderr
    assert up_to_date(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    expected = EXPECTED[name]
    assert params["problem"]["time"]["frequency"] == expected["frequency"]
    for stage, keys in METRIC_KEYS.items():
        path = repo / "metrics" / f"{stage}.json"
        data = json.loads(path.read_text())
        assert data, f"{path} is empty"
        missing = [k for k in keys if k not in data]
        assert not missing, f"{path} lacks {missing}: {sorted(data)}"
    validate = json.loads((repo / "metrics" / "validate.json").read_text())
    assert validate["passed"] is True
    evaluate = json.loads((repo / "metrics" / "evaluate.json").read_text())
    model_mae = evaluate["model"]["mae"]
    assert model_mae == model_mae and model_mae >= 0  # a number, not NaN
    forecasts = pd.read_parquet(repo / "data" / "forecasts.parquet")
    assert len(forecasts) == expected["segments"], forecasts
    assert forecasts["forecast"].notna().all(), forecasts
    panel = pd.read_parquet(repo / "data" / "validated.parquet")
    segment = params["problem"].get("segment") or "series"
    assert panel[segment].nunique() == expected["segments"]
    label = params["problem"].get("target_label")
    if label:  # the label from params reaches the logs
        assert label in proc.stderr + proc.stdout


def _one_line_error(proc, fragment: str) -> str:
    """The stage's error: exit code 2, one ERROR line holding ``fragment``, no traceback."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-4000:]
    lines = [line for line in output.splitlines() if fragment in line]
    assert lines, f"{fragment!r} not in:\n{output[-3000:]}"
    return lines[0]


#: (example, params edits, the stage that must stop, the fragment of its one-line message)
MISTAKES = [
    (  # a date format that does not fit the column: every time is unreadable
        "economics",
        {"problem.time.format": "%d/%m/%Y"},
        "validate",
        "time_readable",
    ),
    (  # a segment that is not a column
        "economics_long",
        {"problem.segment": "varible"},
        "check_params",
        "'problem.segment' must be a column of the table",
    ),
    (  # several rows per period and no aggregation declared
        "co2",
        {"prepare.aggregate": None},
        "validate",
        "prepare.aggregate",
    ),
    (  # lags longer than the history
        "huron",
        {"features.lags": [1, 2, 90]},
        "check_data",
        "'features.lags' reads 90 years of history",
    ),
    (  # folds that do not fit the training window
        "huron",
        {"train.search.enabled": True, "train.search.folds": 8, "train.search.fold_periods": 10},
        "check_data",
        "'train.search.folds' x 'train.search.fold_periods'",
    ),
    (  # a test window past the data
        "macrodata",
        {"windows.test_end": "2012-Q4"},
        "check_data",
        "'windows.test_end' must be within",
    ),
    (  # a backtest validation window longer than its first training window
        "huron",
        {"backtest.validation_periods": 70},
        "check_data",
        "'backtest.validation_periods' must be less than",
    ),
    (  # a time column that is not in the table
        "huron",
        {"problem.time.year_column": "yr"},
        "check_params",
        "'problem.time.year_column' must be a column of the table",
    ),
    (  # a frequency the contract's periods are not written in
        "huron",
        {"problem.time": {"frequency": "Q", "year_column": "year", "period_column": "decade"}},
        "check_params",
        "'windows.train_start' must be a quarter 'YYYY-Qn'",
    ),
]


@pytest.mark.parametrize("name", sorted({m[0] for m in MISTAKES}))
def test_each_mistake_stops_with_one_line_naming_the_key(name, tmp_path):
    """The example's mistakes in turn, on one copy (params restored between them)."""
    repo = scratch_copy(ROOT, name, tmp_path / name)
    for example, edits, stage, fragment in MISTAKES:
        if example != name:
            continue
        set_params(repo, edits)
        proc = run(["dvc", "repro", "check_data"], repo, check=False)
        line = _one_line_error(proc, fragment)
        assert f"Running stage '{stage}'" in proc.stdout, proc.stdout
        assert "ERROR" in line, line  # logged as an error, not a traceback
        if stage == "check_params":  # stopped before any data was read
            assert "Running stage 'collect'" not in proc.stdout, proc.stdout
        run(["git", "checkout", "--", "params.yaml"], repo)
