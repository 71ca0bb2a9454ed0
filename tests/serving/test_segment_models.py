"""Each segment served by its own deployed model (``train.strategy: best_of``), through a
real ``panelcast serve``: the same digits as the predict stage, new rows filtered through
the statistical models, the fast path equal to the reference path, tampering refused."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import urllib.parse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panelcast.core.errors import ModelFileError
from panelcast.modelling.intervals import interval
from panelcast.modelling.statistical import STAT_FAMILIES, FittedStat, is_statistical

from .bundle import copy_bundle, env, request, serve_command, serving

VALUES = ["sales", "volume", "median", "listings", "inventory"]


def manifest_of(params) -> dict:
    return json.loads((Path(params.paths.deployed_segments) / "manifest.json").read_text())


def segment_of(manifest: dict, families: tuple[str, ...]) -> str:
    """The first segment the manifest routes to one of ``families``."""
    return next(e["segment"] for e in manifest["models"] if e["family"] in families)


def last_period(rows: pd.DataFrame) -> int:
    """The last period of ``rows`` (year and month columns)."""
    return int((rows["year"] * 12 + rows["month"] - 1).max())


def row(city: str, t: int, sales: float | None) -> dict:
    """A request row of ``city`` for period ``t`` (year * 12 + month - 1)."""
    return {
        "city": city,
        "year": t // 12,
        "month": t % 12 + 1,
        "sales": sales,
        "volume": None,
        "median": 180000.0,
        "listings": 2000.0,
        "inventory": 4.5,
    }


@pytest.fixture(scope="module")
def mixed_server(mixed_bundle):
    """``panelcast serve`` on the mixed bundle, one worker, for the module."""
    yield from serving(mixed_bundle["params_file"], workers=1)


@pytest.fixture(scope="module")
def mixed_forecaster(mixed_bundle):
    from panelcast.serving.forecaster import Forecaster

    fc = Forecaster.load(mixed_bundle["params"])
    fc.warm_up()
    return fc


def test_the_deployed_manifest_routes_segments_to_several_families(mixed_bundle):
    params = mixed_bundle["params"]
    paths = params.paths
    directory = Path(paths.deployed_segments)
    text = (directory / "manifest.json").read_bytes()
    manifest = json.loads(text)
    meta = json.loads(Path(paths.deployed_metadata).read_text())
    trained = json.loads((Path(paths.segment_models) / "manifest.json").read_text())
    entries = manifest["models"]
    families = {e["family"] for e in entries}
    assert {"global", "sklearn"} <= families and families & set(STAT_FAMILIES), families
    assert "global+theta" in families, families  # a combination: the mean of two models
    assert manifest["strategy"] == "best_of" and manifest["segments"] == len(entries) == 46
    assert sum(manifest["families"].values()) == 46
    # the metadata ties the manifest (its sha256) and the deployed global model
    info = meta["segment_models"]
    assert info["manifest_sha256"] == hashlib.sha256(text).hexdigest()
    assert info["strategy"] == "best_of" and info["families"] == manifest["families"]
    assert [e["segment"] for e in entries] == [e["segment"] for e in trained["models"]]
    by_segment = {e["segment"]: e for e in trained["models"]}
    for entry in entries:
        before = by_segment[entry["segment"]]
        assert entry["family"] == before["family"] and entry["candidate"] == before["candidate"]
        if entry["family"] == "global":
            assert entry["file"] == str(paths.deployed_model)
            assert entry["sha256"] == meta["sha256"]
        elif entry["family"] == "sklearn":
            data = (directory / entry["file"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert entry["sha256"] != before["sha256"], "refit on every labelled period"
            assert entry["fit_end_period"] == meta["last_period"]
        else:
            assert entry["file"] is None and entry["fit_end_period"] == meta["last_period"]
    # the series of the statistical segments, each from its first labelled period
    series = pd.read_parquet(directory / "series.parquet")
    stat = sorted(e["segment"] for e in entries if is_statistical(e["family"]))
    assert sorted(series["city"].unique()) == stat
    first = series.groupby("city", sort=True).first()
    assert first["target"].notna().all()
    assert (
        manifest["series"]["sha256"]
        == hashlib.sha256((directory / "series.parquet").read_bytes()).hexdigest()
    )
    forecasts = pd.read_parquet(paths.forecasts)
    assert set(forecasts["model_version"]) == {meta["version"]}


def test_each_segment_is_served_as_the_predict_stage_forecast_it(
    mixed_server, mixed_bundle, mixed_forecaster
):
    params = mixed_bundle["params"]
    manifest = manifest_of(params)
    chosen = {
        "global": segment_of(manifest, ("global",)),
        "sklearn": segment_of(manifest, ("sklearn",)),
        "stat": segment_of(manifest, STAT_FAMILIES),
    }
    family = {e["segment"]: e["family"] for e in manifest["models"]}
    batch = pd.read_parquet(params.paths.forecasts).set_index("city")
    status, body = request(
        mixed_server.url + "/predict", "POST", {"segments": list(chosen.values())}
    )
    assert status == 200, body
    records = {r["city"]: r for r in body["forecasts"]}
    assert set(records) == set(chosen.values())
    for name, record in records.items():
        expected = batch.loc[name]
        assert record["period"] == expected["period"]
        for col in ["forecast", "lower_80", "upper_80", "lower_95", "upper_95"]:
            assert record[col] == float(expected[col]), (name, col)  # the same digits
        assert record["family"] == family[name]
    # the routed segments are not the global model's forecasts
    global_only = dataclasses.replace(mixed_forecaster, segment_models=None)
    reference = global_only.forecast(segments=list(chosen.values())).set_index("city")
    assert records[chosen["global"]]["forecast"] == reference.loc[chosen["global"], "forecast"]
    for kind in ("sklearn", "stat"):
        assert records[chosen[kind]]["forecast"] != reference.loc[chosen[kind], "forecast"]
    # the batch record and the model metadata name the families
    url = mixed_server.url + "/forecasts/" + urllib.parse.quote(chosen["sklearn"])
    status, record = request(url)
    assert status == 200 and record["family"] == "sklearn"
    assert record["forecast"] == float(batch.loc[chosen["sklearn"], "forecast"])
    query = urllib.parse.urlencode([("segment", name) for name in chosen.values()])
    status, meta = request(mixed_server.url + "/v2/models/panelcast?" + query)
    assert status == 200
    assert meta["segment_models"]["strategy"] == "best_of"
    assert meta["segment_models"]["families"] == manifest["families"]
    assert meta["segment_models"]["segments"] == {n: family[n] for n in chosen.values()}
    status, meta = request(mixed_server.url + "/v2/models/panelcast?segment=*")
    assert status == 200 and meta["segment_models"]["segments"] == family
    status, body = request(mixed_server.url + "/v2/models/panelcast?segment=Atlantis")
    assert status == 404 and "Atlantis" in body["error"]
    status, body = request(mixed_server.url + "/predict", "POST", {"segments": ["Atlantis"]})
    assert status == 404


def test_new_rows_of_a_statistical_segment_move_its_forecast_as_its_model_says(
    mixed_server, mixed_bundle, mixed_forecaster
):
    params = mixed_bundle["params"]
    paths = params.paths
    manifest = manifest_of(params)
    name = segment_of(manifest, STAT_FAMILIES)
    entry = next(e for e in manifest["models"] if e["segment"] == name)
    series = pd.read_parquet(Path(paths.deployed_segments) / "series.parquet")
    mine = series[series["city"] == name].sort_values("t")
    t = mine["t"].to_numpy()
    t0, end = int(t[0]), int(t[-1])
    y = np.full(end - t0 + 1, np.nan)
    y[t - t0] = mine["target"].to_numpy()
    state = mixed_forecaster.state
    stored = state[state["city"] == name]
    last = last_period(stored)
    assert last == end
    level = float(np.nanmean(y[-12:]))
    # the last stored period replaced, one period skipped, then a new one
    rows = [row(name, last, round(level * 1.3, 1)), row(name, last + 2, round(level * 0.8, 1))]
    status, body = request(mixed_server.url + "/predict", "POST", {"rows": rows})
    assert status == 200, body
    (record,) = body["forecasts"]
    extended = np.full(last + 2 - t0 + 1, np.nan)
    extended[: len(y)] = y
    extended[last - t0] = rows[0]["sales"]
    extended[last + 2 - t0] = rows[1]["sales"]
    fit = y[: entry["fit_end"] - t0 + 1]
    model = FittedStat(entry["family"], entry["candidate"], fit, 12)
    expected = model.one_step(extended)[1]
    assert record["period"] == f"{(last + 3) // 12}-{(last + 3) % 12 + 1:02d}"
    assert record["forecast"] == expected and record["family"] == entry["family"]
    meta = json.loads(Path(paths.deployed_metadata).read_text())
    for level_name, pair in meta["interval_offsets"].items():
        lower, upper = interval(np.array([expected]), tuple(pair))
        assert record[f"lower_{level_name}"] == lower[0]
        assert record[f"upper_{level_name}"] == upper[0]
    # the stored series alone gives the predict stage's forecast, another number
    batch = pd.read_parquet(paths.forecasts).set_index("city")
    assert model.one_step(y)[1] == batch.loc[name, "forecast"] != expected


def random_rows(fc, rng, manifest: dict) -> tuple[pd.DataFrame | None, list[str]]:
    """Rows of 1-4 segments of mixed families: stored periods replaced, new periods after
    gaps, older periods, missing targets; plus segments asked for by name only."""
    by_family: dict[str, list[str]] = {}
    for e in manifest["models"]:
        kind = "stat" if e["family"] in STAT_FAMILIES else e["family"]
        by_family.setdefault(kind, []).append(e["segment"])
    segs = sorted(
        {str(rng.choice(by_family[k])) for k in rng.choice(sorted(by_family), rng.integers(1, 5))}
    )
    state = fc.state
    rows = []
    for s in segs:
        mine = state[state["city"] == s]
        last = last_period(mine)
        level = float(mine["sales"].mean())
        periods = {last - int(rng.integers(0, 40)) if rng.random() < 0.4 else last}
        periods |= {last + int(rng.integers(1, 4)) for _ in range(int(rng.integers(0, 3)))}
        for t in sorted(periods):
            sales = None if rng.random() < 0.15 else round(level * rng.uniform(0.5, 1.5), 2)
            rows.append(row(s, t, sales))
    extra = [str(rng.choice(fc.segments)) for _ in range(int(rng.integers(0, 3)))]
    if rng.random() < 0.3:
        rows = rows[-1:]
    frame = pd.DataFrame(rows).astype({c: float for c in VALUES}) if rows else None
    return frame, sorted(set(extra))


def test_fast_and_reference_paths_agree_on_mixed_requests(
    mixed_server, mixed_bundle, mixed_forecaster
):
    fc = mixed_forecaster
    manifest = manifest_of(mixed_bundle["params"])
    assert fc.fast.own is not None, "the mixed deployment routes segments"
    rng = np.random.default_rng(5)
    seen = set()
    for i in range(40):
        rows, extra = random_rows(fc, rng, manifest)
        expected = fc.forecast(rows, extra)
        got = fc.forecast_fast(rows, extra)
        pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=f"request {i}")
        seen |= set(expected["family"])
    assert {"global", "sklearn"} <= seen and seen & set(STAT_FAMILIES), seen
    # over HTTP: a request mixing every family answers as the reference path
    names = [segment_of(manifest, f) for f in (("global",), ("sklearn",), STAT_FAMILIES)]
    rows = []
    for k, name in enumerate(names):
        mine = fc.state[fc.state["city"] == name]
        last = last_period(mine)
        rows += [row(name, last, 100.0 + k), row(name, last + 1, 120.0 + k)]
    status, body = request(mixed_server.url + "/predict", "POST", {"rows": rows})
    assert status == 200, body
    reference = fc.forecast(pd.DataFrame(rows).astype({c: float for c in VALUES}))
    for record, (_, ref) in zip(body["forecasts"], reference.iterrows(), strict=True):
        assert record["city"] == ref["city"] and record["family"] == ref["family"]
        for col in ["forecast", "lower_80", "upper_80", "lower_95", "upper_95"]:
            assert record[col] == ref[col], (record["city"], col)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_tampered_segment_model_is_refused_naming_the_file(mixed_bundle, tmp_path):
    from panelcast.core.config import load_params
    from panelcast.serving.forecaster import Forecaster
    from panelcast.serving.loading import file_signature

    manifest = manifest_of(mixed_bundle["params"])
    sklearn_file = next(e["file"] for e in manifest["models"] if e["family"] == "sklearn")
    cases = {
        "model": sklearn_file,
        "swapped": sklearn_file,  # a valid skops file: the train stage's model of the segment
        "series": "series.parquet",
        "manifest": "manifest.json",
    }
    for case, name in cases.items():
        params_file = copy_bundle(mixed_bundle["params_file"], tmp_path / case)
        params = load_params(params_file)
        target = Path(params.paths.deployed_segments) / name
        before = file_signature(params)
        if case == "swapped":
            target.write_bytes((Path(params.paths.segment_models) / name).read_bytes())
        else:
            _flip(target)
        if case == "manifest":  # the service watches it for hot reload
            assert file_signature(params) != before
        with pytest.raises(ModelFileError, match="does not match") as error:
            Forecaster.load(params)
        assert str(target) in str(error.value), (case, str(error.value))
    # `panelcast serve` refuses to start: exit code 2, one line naming the file
    params_file = tmp_path / "model" / "params.yaml"
    proc = subprocess.run(
        serve_command(params_file),
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and sklearn_file in lines[0] and "sha256" in lines[0], proc.stderr


def test_the_global_strategy_routes_nothing(bundle, forecaster):
    """The default bundle: every segment global, forecasts without a family."""
    manifest = manifest_of(bundle["params"])
    assert manifest["strategy"] == "global" and manifest["families"] == {"global": 46}
    assert {e["sha256"] for e in manifest["models"]} == {forecaster.metadata["sha256"]}
    assert not forecaster.routed and forecaster.fast.own is None
    frame = forecaster.forecast_fast(segments=["Austin"])
    assert "family" not in frame.columns
    assert "family" not in forecaster.forecast(segments=["Austin"]).columns
