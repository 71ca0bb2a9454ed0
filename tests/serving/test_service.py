"""The HTTP service through a real ``panelcast serve`` (two uvicorn workers on loopback)."""

from __future__ import annotations

import hashlib
import json
import math
import socket
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .bundle import GOOD, Server, batch_predict, copy_bundle, env, request, serve_command

VALUES = ["sales", "volume", "median", "listings", "inventory"]


def sample_rows(forecaster, seed: int = 3) -> list[dict]:
    """Rows of several segments: stored periods overridden, new periods, missing values."""
    rng = np.random.default_rng(seed)
    state = forecaster.state
    rows = []
    for city in rng.choice(forecaster.segments, size=8, replace=False):
        mine = state[state["city"] == city]
        last = int(mine["year"].max()) * 12 + int(mine["month"].max()) - 1
        for t in sorted(
            {last - 2, last, last + 1, last + 3} - {int(rng.integers(last - 2, last + 4))}
        ):
            row = {"city": str(city), "year": t // 12, "month": t % 12 + 1}
            for c in VALUES:
                high = 100.0 if c == "inventory" else 1e4
                row[c] = None if rng.random() < 0.2 else round(float(rng.uniform(0, high)), 3)
            rows.append(row)
    return rows


def as_infer(rows: list[dict]) -> dict:
    types = {"city": "BYTES", "year": "INT64", "month": "INT64"}
    return {
        "id": "test-1",
        "parameters": {"content_type": "pd"},
        "inputs": [
            {
                "name": name,
                "datatype": types.get(name, "FP64"),
                "shape": [len(rows)],
                "data": [r[name] for r in rows],
            }
            for name in rows[0]
        ],
    }


def test_health_readiness_and_model_metadata(server, forecaster):
    assert request(server.url + "/v2/health/live") == (200, {"live": True})
    status, body = request(server.url + "/v2/health/ready")
    assert status == 200 and body["ready"] is True
    status, body = request(server.url + "/v2/models/panelcast/ready")
    assert status == 200 and body["ready"] is True
    status, meta = request(server.url + "/v2/models/panelcast")
    assert status == 200
    assert meta["model_version"] == forecaster.version and meta["versions"] == [forecaster.version]
    assert meta["training_window"] == forecaster.metadata["training_window"]
    assert meta["gate"]["passed"] is True
    assert meta["features"] == forecaster.metadata["features"]
    assert meta["input_schema"] == forecaster.metadata["input_schema"]
    assert meta["interval_levels"] == [80, 95]
    assert [i["name"] for i in meta["inputs"]] == forecaster.metadata["input_schema"]
    assert meta["compiled"] is True


def test_batch_forecasts_of_a_segment(server, bundle):
    table = pd.read_parquet(bundle["params"].paths.forecasts)
    row = table[table["city"] == "Austin"].iloc[0]
    status, body = request(server.url + "/forecasts/Austin")
    assert status == 200
    assert body["forecast"] == float(row["forecast"]) and body["period"] == row["period"]
    status, body = request(server.url + "/forecasts/Atlantis")
    assert status == 404 and "Atlantis" in body["error"]


def test_online_infer_and_batch_give_the_same_digits(server, forecaster, bundle, tmp_path):
    rows = sample_rows(forecaster)
    status, online = request(server.url + "/predict", "POST", {"rows": rows})
    assert status == 200, online
    status, infer = request(server.url + "/v2/models/panelcast/infer", "POST", as_infer(rows))
    assert status == 200, infer
    assert infer["id"] == "test-1" and infer["model_version"] == forecaster.version
    # the batch CLI on the same rows, written as a file
    frame = pd.DataFrame(rows).astype({c: float for c in VALUES})
    source, out = tmp_path / "rows.parquet", tmp_path / "out.parquet"
    frame.to_parquet(source, index=False)
    proc = batch_predict(bundle["params_file"], source, out)
    assert proc.returncode == 0, proc.stderr
    batch = pd.read_parquet(out)
    outputs = {o["name"]: o["data"] for o in infer["outputs"]}
    records = online["forecasts"]
    assert [r["city"] for r in records] == batch["city"].tolist() == outputs["city"]
    assert [r["period"] for r in records] == batch["period"].tolist() == outputs["period"]
    assert set(batch["model_version"]) == {online["model_version"]} == {forecaster.version}
    for col in ["forecast", "lower_80", "upper_80", "lower_95", "upper_95"]:
        expected = [None if math.isnan(v) else v for v in batch[col].tolist()]
        assert [r[col] for r in records] == expected, col  # floats compared exactly
        assert outputs[col] == expected, col
    # stored history only: the same as the predict stage's batch file
    status, stored = request(server.url + "/predict", "POST", {"segments": ["Dallas", "Austin"]})
    table = pd.read_parquet(bundle["params"].paths.forecasts).set_index("city")
    assert [r["city"] for r in stored["forecasts"]] == ["Austin", "Dallas"]
    for r in stored["forecasts"]:
        assert r["forecast"] == table.loc[r["city"], "forecast"]
        assert r["upper_95"] == table.loc[r["city"], "upper_95"]


def test_contract_violations_are_422_naming_field_rule_and_value(server):
    bad = dict(GOOD, sales=-5.0, inventory=500.0)
    status, body = request(server.url + "/predict", "POST", {"rows": [bad]})
    assert status == 422
    rules = {(d["field"], d["rule"]) for d in body["details"]}
    assert {("sales", "min"), ("inventory", "max")} <= rules
    assert [d["value"] for d in body["details"] if d["field"] == "sales"] == [[-5.0]]
    long = dict(GOOD, year="x" * 500)
    status, body = request(server.url + "/predict", "POST", {"rows": [long]})
    assert status == 422
    (year,) = [d for d in body["details"] if d["field"] == "year"]
    assert year["rule"] == "type" and len(year["value"][0]) <= 80
    missing = {k: v for k, v in GOOD.items() if k != "median"}
    status, body = request(server.url + "/predict", "POST", {"rows": [missing]})
    assert status == 422 and body["details"][0] == {
        **body["details"][0],
        "field": "median",
        "rule": "required",
    }
    status, body = request(server.url + "/predict", "POST", {"rows": [GOOD, GOOD]})
    assert status == 422 and body["details"][0]["rule"] == "unique_key"
    future = dict(GOOD, year=2099)
    status, body = request(server.url + "/predict", "POST", {"rows": [future]})
    assert status == 422 and {d["rule"] for d in body["details"]} == {"no_future"}


def test_unknown_segments_are_404(server):
    status, body = request(server.url + "/predict", "POST", {"segments": ["Austin", "Atlantis"]})
    assert status == 404 and body["details"][0]["value"] == ["Atlantis"]
    status, body = request(server.url + "/predict", "POST", {"rows": [dict(GOOD, city="Gotham")]})
    assert status == 404 and "Gotham" in body["error"]
    infer = as_infer([dict(GOOD, city="Gotham")])
    status, body = request(server.url + "/v2/models/panelcast/infer", "POST", infer)
    assert status == 404


@pytest.mark.parametrize(
    "body, field, rule",
    [
        (b"{not json", "$", "json"),
        (b'{"segments": [NaN]}', "$", "json"),
        (b'{"rows": [{"sales": Infinity}]}', "$", "json"),
        (b'{"rows": [{"sales": 1e999}]}', "$", "json"),
        (b"\xff\xfe", "$", "utf-8"),
        (b"[]", "$", "type"),
        (b'{"rows": {"city": "Austin"}}', "rows", "type"),
        (b'{"rows": [1]}', "rows[0]", "type"),
        (b'{"rows": [{"city": ["Austin"]}]}', "rows[0].city", "scalar"),
        (b'{"segments": "Austin"}', "segments", "type"),
        (b'{"segments": ["Austin"], "x": 1}', "x", "unknown_field"),
        (b"{}", "rows", "required"),
    ],
)
def test_malformed_requests_are_400(server, body, field, rule):
    status, answer = request(server.url + "/predict", "POST", body)
    assert status == 400, answer
    assert answer["details"][0]["field"] == field and answer["details"][0]["rule"] == rule


@pytest.mark.parametrize(
    "change, field",
    [
        ({"inputs": "x"}, "inputs"),
        ({"parameters": {"content_type": "np"}}, "parameters.content_type"),
        (
            {"inputs": [{"name": "city", "datatype": "TEXT", "shape": [1], "data": ["a"]}]},
            "inputs[0].datatype",
        ),
        (
            {"inputs": [{"name": "city", "datatype": "BYTES", "shape": [2], "data": ["a"]}]},
            "inputs[0].data",
        ),
        (
            {"inputs": [{"name": "city", "datatype": "BYTES", "shape": [1, 2], "data": ["a"]}]},
            "inputs[0].shape",
        ),
        (
            {"inputs": [{"name": "year", "datatype": "INT64", "shape": [1], "data": ["2015"]}]},
            "inputs[0].data[0]",
        ),
        (  # segments only, but not names
            {"inputs": [{"name": "city", "datatype": "INT64", "shape": [2], "data": [None, 0]}]},
            "inputs[0].data[0]",
        ),
    ],
)
def test_inference_protocol_errors_are_400(server, change, field):
    body = {**as_infer([GOOD]), **change}
    status, answer = request(server.url + "/v2/models/panelcast/infer", "POST", body)
    assert status == 400 and "error" in answer
    assert answer["details"][0]["field"] == field


def test_too_many_rows_is_413_before_parsing(server):
    status, body = request(server.url + "/predict", "POST", {"segments": ["a"] * 300_001})
    assert status == 413 and body["details"][0]["rule"] == "max_rows"
    # a huge Content-Length is refused before the body is read
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\n\r\n{"
        )
        head = sock.recv(65536).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head


def test_metrics_and_access_log(server, forecaster):
    request(server.url + "/predict", "POST", {"segments": ["Austin"]})
    request(server.url + "/predict", "POST", {"segments": ["Atlantis"]})
    status, text = request(server.url + "/metrics")
    assert status == 200
    assert 'panelcast_requests_total{route="/predict",status="200"}' in text
    assert 'panelcast_requests_total{route="/predict",status="404"}' in text
    assert 'panelcast_request_duration_seconds_bucket{route="/predict",le="+Inf"}' in text
    assert f'panelcast_model_info{{version="{forecaster.version}",worker="0"}} 1' in text
    assert f'panelcast_model_info{{version="{forecaster.version}",worker="1"}} 1' in text
    assert 'panelcast_errors_total{kind="client_error"}' in text
    lines = [line for line in server.log().splitlines() if "panelcast.access" in line]
    entry = json.loads(lines[-1].split("panelcast.access: ", 1)[1])
    assert {"method", "path", "status", "duration_ms", "model_version"} <= set(entry)
    assert entry["model_version"] == forecaster.version


# --------------------------------------------------------------------------- refusals


def _corrupt(params_file: Path) -> None:
    model = params_file.parent / "models" / "deployed.skops"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))


def _unreadable(params_file: Path) -> None:
    _replace_model(params_file, b"this is not a skops file")


def _untrusted(params_file: Path) -> None:
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    _replace_model(params_file, sio.dumps(FunctionTransformer(func=print)))


def _replace_model(params_file: Path, data: bytes) -> None:
    (params_file.parent / "models" / "deployed.skops").write_bytes(data)
    meta_file = params_file.parent / "models" / "deployed.json"
    meta = json.loads(meta_file.read_text())
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    meta_file.write_text(json.dumps(meta))


def _failed_gate(params_file: Path) -> None:
    meta_file = params_file.parent / "models" / "deployed.json"
    meta = json.loads(meta_file.read_text())
    meta["gate"]["passed"], meta["gate"]["failures"] = False, ["WAPE 0.2 above max_wape 0.1"]
    meta_file.write_text(json.dumps(meta))


REFUSALS = {
    "sha256": (_corrupt, {}, "does not match"),
    "unreadable": (_unreadable, {}, "not a readable skops model file"),
    "untrusted": (_untrusted, {}, "trusted list"),
    "failed gate": (_failed_gate, {}, "failed its evaluation gate"),
    "schema": (lambda p: None, {"features.lags": [1, 2, 3]}, "does not match the configuration"),
}


def test_the_cli_refuses_a_model_it_must_not_serve(bundle, tmp_path):
    """Each refusal: exit code 2 and one line naming the reason (all started at once)."""
    procs = {}
    for name, (damage, updates, _) in REFUSALS.items():
        params_file = copy_bundle(bundle["params_file"], tmp_path / name.replace(" ", "_"), updates)
        damage(params_file)
        procs[name] = subprocess.Popen(
            serve_command(params_file),
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        lines = [line for line in err.strip().splitlines() if line]
        assert proc.returncode == 2, (name, err)
        assert len(lines) == 1 and REFUSALS[name][2] in lines[0], (name, err)
        assert out == ""


def test_allow_failed_gate_serves_the_model(bundle, tmp_path):
    params_file = copy_bundle(bundle["params_file"], tmp_path / "gate")
    _failed_gate(params_file)
    with Server(params_file, extra=("--allow-failed-gate",)) as srv:
        srv.wait_ready()
        status, meta = request(srv.url + "/v2/models/panelcast")
        assert status == 200 and meta["gate"]["passed"] is False
        assert "although it failed its gate" in srv.log()
