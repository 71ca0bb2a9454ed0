"""A segment refitted alone by the production cycle: the forecaster (and so the service)
refits that segment's statistical model on the cycle's series, for the deployed version
only, and leaves every other segment as deployed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from panelcast.core.config import load_params
from panelcast.core.periods import TARGET
from panelcast.serving.forecaster import Forecaster
from panelcast.serving.segments import CYCLE_SERIES

from .bundle import copy_bundle


def test_a_segment_refitted_by_the_cycle_is_forecast_from_its_new_series(mixed_bundle, tmp_path):
    state_dir = tmp_path / "production"
    params_file = copy_bundle(
        mixed_bundle["params_file"], tmp_path / "copy", {"cycle.state_dir": str(state_dir)}
    )
    params = load_params(params_file)
    seg = params.problem.segment_column
    deployed = Forecaster.load(params)
    before = deployed.forecast(segments=list(deployed.segments)).set_index(seg)["forecast"]
    manifest = json.loads((Path(params.paths.deployed_segments) / "manifest.json").read_text())
    theta = next(e["segment"] for e in manifest["models"] if e["family"] == "theta")
    series = pd.read_parquet(Path(params.paths.deployed_segments) / "series.parquet")
    own = series[series[seg].astype(str) == theta].copy()
    own[TARGET] = own[TARGET] * 1.3  # another history: a refit must move the forecast

    state_dir.mkdir()
    for version, expect_change in ((deployed.version, True), ("another-version", False)):
        own["model_version"] = version
        own.to_parquet(state_dir / CYCLE_SERIES)
        after = Forecaster.load(params).forecast(segments=list(deployed.segments))
        after = after.set_index(seg)["forecast"]
        others = [s for s in deployed.segments if s != theta]
        pd.testing.assert_series_equal(after[others], before[others])  # untouched
        moved = after[theta] != before[theta]
        assert moved == expect_change, (version, after[theta], before[theta])
        if expect_change:  # about 1.3 x: the model follows its new series
            assert after[theta] / before[theta] > 1.15
