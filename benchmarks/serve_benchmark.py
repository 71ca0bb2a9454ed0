"""Serving benchmark: `panelcast serve` (2 uvicorn workers) under a bounded load, and the
same model behind MLServer 1.7.1 with adaptive batching under the same load.

What it prints (everything on 127.0.0.1, on this machine's 2 cores, shared with the load
generator):

- start to ready: from starting `panelcast serve --workers 2` to the first 200 of
  ``/v2/health/ready``;
- requests/s and p50/p99 latency of single-segment ``POST /predict`` requests (one row
  in the source schema: a segment's latest period) at concurrency 1, 8 and 32, a fixed
  number of requests each after a warm-up;
- MLServer 1.7.1 (adaptive batching, ``max_batch_size`` and ``max_batch_time`` set to
  ``serve.batch_max_rows`` and ``serve.batch_window_ms``) serving the same model file
  through a small custom runtime that calls ``model.predict`` on the same requests'
  feature rows (computed beforehand by us: MLServer does less work per request), under
  the same load, and the throughput ratio. MLServer runs in its own throw-away
  virtualenv under /tmp (``--mlserver-venv``; created with uv when missing; never a
  project dependency);
- the time of one ``POST /predict`` with 10,000 segments (one row each) on a synthetic
  deployed bundle: a model fitted on the real cities without the segment feature (a
  categorical feature holds at most 255 levels), served with the recent history of
  10,000 segments resampled from the real cities under new names, in a temporary folder
  with its own params.yaml and contract.

The model of the throughput runs is the repository's deployed model
(``paths.deployed_*`` of params.yaml, from `dvc repro` or `dvc pull`); without it one is
built from the real data with the configured hyperparameters (no search) in a temporary
folder. Nothing here is a pass/fail assertion: the figures are reported as measured.

Usage: python benchmarks/serve_benchmark.py [--quick] [--no-mlserver]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.serving.bundle import (  # noqa: E402
    Server,
    build_bundle,
    free_port,
    request,
)

MLSERVER_VENV = Path("/tmp/panelcast-mlserver-venv")
MLSERVER_PACKAGES = [
    "mlserver==1.7.1",
    "uvloop==0.21.0",
    "scikit-learn==1.9.1",
    "skops==0.16.0",
    "pyyaml",
    "threadpoolctl",
]

RUNTIME = '''
"""A custom MLServer runtime: the panelcast model on feature rows (named columns)."""
import json
import os
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"
import pandas as pd
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, PandasCodec
from mlserver.types import InferenceRequest, InferenceResponse
from threadpoolctl import threadpool_limits

from panelcast.modelling.model import loads_model


class PanelcastRuntime(MLModel):
    async def load(self) -> bool:
        threadpool_limits(limits=1)
        folder = Path(self.settings.parameters.uri)
        self.model = loads_model((folder / "deployed.skops").read_bytes())
        meta = json.loads((folder / "deployed.json").read_text())
        self.features, self.categories = meta["features"], meta["segments"]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        frame = PandasCodec.decode_request(payload)[self.features]
        names = [v.decode() if isinstance(v, bytes) else v for v in frame["segment"]]
        frame["segment"] = pd.Categorical(names, categories=self.categories)
        frame["season_position"] = frame["season_position"].astype("int64")
        forecast = self.model.predict(frame)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.settings.parameters.version,
            outputs=[NumpyCodec.encode_output("forecast", forecast)],
        )
'''


# --------------------------------------------------------------------------- load


def http_request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _load(port: int, payloads: list[bytes], total: int, concurrency: int, limit: float):
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    issued = 0
    deadline = time.perf_counter() + limit

    async def client() -> None:
        nonlocal issued
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while issued < total and time.perf_counter() < deadline:
                payload = payloads[issued % len(payloads)]
                issued += 1
                started = time.perf_counter()
                writer.write(payload)
                status, _ = await _read_response(reader)
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "statuses": statuses,
    }


def run_load(port, payloads, total, concurrency, limit=180.0) -> dict:
    try:
        import uvloop

        return uvloop.run(_load(port, payloads, total, concurrency, limit))
    except ImportError:  # pragma: no cover
        return asyncio.run(_load(port, payloads, total, concurrency, limit))


def drive(name: str, port: int, payloads: list[bytes], plan: list[tuple[int, int]]) -> list[dict]:
    run_load(port, payloads, 300, 8)  # warm-up
    out = []
    for concurrency, total in plan:
        result = run_load(port, payloads, total, concurrency)
        result["server"] = name
        out.append(result)
        print(
            f"  {name:<10} c={concurrency:<3} {result['requests']:>6} requests "
            f"{result['rps']:>8.1f} req/s  p50 {result['p50_ms']:>7.2f} ms  "
            f"p99 {result['p99_ms']:>7.2f} ms  statuses {result['statuses']}",
            flush=True,
        )
    return out


# --------------------------------------------------------------------------- bundles


def repo_bundle(work: Path) -> tuple[Path, str]:
    """The repository's deployed model, or one built from the real data."""
    from panelcast.core.config import load_params

    params = load_params(ROOT / "params.yaml")
    p = params.paths
    if all((ROOT / f).is_file() for f in (p.deployed_model, p.deployed_metadata, p.serving_state)):
        return ROOT / "params.yaml", "the repository's deployed model (paths.deployed_*)"
    configured = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["hyperparameters"]
    params_file, _, _ = build_bundle(
        work / "built", {"train.hyperparameters.max_iter": configured["max_iter"]}
    )
    return params_file, "no deployed model in the repository: one built from the real data"


def request_rows(state: pd.DataFrame, params) -> list[dict]:
    """Each segment's latest stored period as a JSON request row (a date column written in
    the declared format)."""
    problem = params.problem
    time = problem.time
    latest = state.sort_values(list(time.columns)).groupby(problem.segment_column).tail(1)
    if time.column is not None:
        fmt = time.format or "%Y-%m-%d %H:%M:%S"
        latest = latest.assign(**{time.column: latest[time.column].dt.strftime(fmt)})
    latest = latest.astype(object).where(latest.notna(), None)
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in latest.to_dict(orient="records")
    ]


def single_segment_rows(params_file: Path) -> list[dict]:
    """Each segment's latest stored period, as a request row."""
    from panelcast.core.config import load_params

    params = load_params(params_file)
    state = pd.read_parquet(Path(params_file).parent / params.paths.serving_state)
    return request_rows(state, params)


def synthetic_bundle(work: Path, segments: int = 10_000) -> tuple[Path, list[dict]]:
    """A deployed bundle with ``segments`` synthetic segments (see the module docstring)."""
    configured = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["hyperparameters"]
    dest = work / "synthetic"
    params_file, params, table = build_bundle(
        dest,
        {
            "features.segment_feature": False,
            "train.hyperparameters.max_iter": configured["max_iter"],
        },
    )
    rng = np.random.default_rng(0)
    state = pd.read_parquet(params.paths.serving_state)
    seg = params.problem.segment_column
    cities = sorted(state[seg].unique())
    names = [f"Town {i:05d}" for i in range(segments)]
    parts = []
    for name, city in zip(names, rng.choice(cities, size=segments), strict=True):
        rows = state[state[seg] == city].copy()
        scale = rng.uniform(0.5, 2.0)
        for col in ["sales", "volume", "listings"]:
            rows[col] = (rows[col] * scale).round()
        rows[seg] = name
        parts.append(rows)
    synthetic = pd.concat(parts, ignore_index=True)
    synthetic.to_parquet(params.paths.serving_state, index=False, compression="zstd")
    contract = yaml.safe_load(Path(params.paths.contract).read_text())
    contract["columns"][seg]["allowed"] = sorted(
        set(contract["columns"][seg]["allowed"]) | set(names)
    )
    Path(params.paths.contract).write_text(yaml.safe_dump(contract, sort_keys=False))
    return params_file, request_rows(synthetic, params)


# --------------------------------------------------------------------------- MLServer


def mlserver_python(venv: Path) -> tuple[Path | None, str]:
    """The MLServer virtualenv's python (created when missing), or None and why not."""
    python = venv / "bin" / "python"
    if python.is_file() and (venv / "bin" / "mlserver").is_file():
        return python, "existing virtualenv"
    uv = shutil.which("uv")
    if uv is None:
        return None, "uv is not installed (needed to create the MLServer virtualenv)"
    steps = [
        [uv, "venv", "--quiet", "--python", "3.11", str(venv)],
        [uv, "pip", "install", "--quiet", "--python", str(python), *MLSERVER_PACKAGES],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            return None, f"`{' '.join(cmd[:4])} ...` failed: {proc.stderr.strip()[-500:]}"
    return python, "created"


def feature_payloads(params_file: Path, rows: list[dict]) -> tuple[list[bytes], list[float]]:
    """The Open Inference Protocol bodies of the feature rows of ``rows`` (one each), and
    our forecast of each (to check MLServer answers the same)."""
    from panelcast.core.config import load_params
    from panelcast.serving.forecaster import Forecaster

    cwd = os.getcwd()
    os.chdir(Path(params_file).parent)
    try:
        fc = Forecaster.load(load_params(params_file))
    finally:
        os.chdir(cwd)
    fast = fc.fast
    bodies, forecasts = [], []
    for row in rows:
        arrays = fast.rows_from_records([row])
        prep = fast.prepare(arrays, [])
        X = fast.feature_matrix(prep)
        forecasts.append(float(fast.forecast_many([prep])[0].forecast[0]))
        inputs = []
        for j, name in enumerate(fast.features):
            value = X[0, j]
            if name == "segment":
                inputs.append(
                    {
                        "name": name,
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": [fast.names[int(value)]],
                    }
                )
            elif name == "season_position":
                inputs.append(
                    {"name": name, "datatype": "INT64", "shape": [1], "data": [int(value)]}
                )
            else:
                v = None if np.isnan(value) else float(value)
                inputs.append({"name": name, "datatype": "FP64", "shape": [1], "data": [v]})
        body = {"parameters": {"content_type": "pd"}, "inputs": inputs}
        bodies.append(json.dumps(body).encode())
    return bodies, forecasts


def start_mlserver(python: Path, params_file: Path, work: Path, workers: int):
    from panelcast.core.config import load_params

    params = load_params(params_file)
    base = Path(params_file).parent
    folder = work / f"mlserver-{workers}"
    model_dir = folder / "panelcast"
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(base / params.paths.deployed_model, model_dir / "deployed.skops")
    shutil.copy(base / params.paths.deployed_metadata, model_dir / "deployed.json")
    (model_dir / "runtime.py").write_text(RUNTIME)
    version = json.loads((model_dir / "deployed.json").read_text())["version"]
    serve = params.serve
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "panelcast",
                "implementation": "runtime.PanelcastRuntime",
                "max_batch_size": serve.batch_max_rows,
                "max_batch_time": serve.batch_window_ms / 1000,
                "parameters": {"uri": str(model_dir), "version": version},
            }
        )
    )
    port, grpc, metrics = free_port(), free_port(), free_port()
    (folder / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": grpc,
                "metrics_port": metrics,
                "metrics_endpoint": None,
                "parallel_workers": workers,
                "debug": False,
                "gzip_enabled": False,
                "tracing_server": None,
                "kafka_enabled": False,
            }
        )
    )
    environ = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{model_dir}",
        "OMP_NUM_THREADS": "1",
        "MLSERVER_HOST": "127.0.0.1",
    }
    log = open(folder / "mlserver.log", "wb")  # noqa: SIM115 (closed by the caller)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(python.parent / "mlserver"), "start", str(folder)],
        cwd=folder,
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            break
        try:
            status, _ = request(f"http://127.0.0.1:{port}/v2/models/panelcast/ready", timeout=1)
            if status == 200:
                return proc, port, log, time.perf_counter() - started, folder
        except OSError:
            pass
        time.sleep(0.05)
    stop_process(proc)
    log.close()
    text = (folder / "mlserver.log").read_text(errors="replace")[-1500:]
    raise RuntimeError(f"MLServer did not become ready:\n{text}")


def stop_process(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--no-mlserver", action="store_true", help="skip the MLServer runs")
    parser.add_argument("--mlserver-venv", type=Path, default=MLSERVER_VENV)
    parser.add_argument(
        "--mlserver-workers", type=int, default=2, help="MLServer parallel_workers (default 2)"
    )
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    plan = [(1, int(1000 * scale)), (8, int(4000 * scale)), (32, int(8000 * scale))]
    print(f"machine: {os.cpu_count()} cores, load average before: {os.getloadavg()}")
    from panelcast.core.config import load_params

    work = Path(tempfile.mkdtemp(prefix="panelcast-serve-bench-"))
    results: dict = {"runs": []}
    try:
        params_file, origin = repo_bundle(work)
        print(f"model: {origin}")
        rows = single_segment_rows(params_file)
        ours = [http_request("/predict", json.dumps({"rows": [r]}).encode()) for r in rows]

        print("panelcast serve --workers 2 (single-segment POST /predict, one row each):")
        server = Server(params_file, workers=2, log=work / "serve.log")
        try:
            ready = server.wait_ready(timeout=120)
            results["start_to_ready_s"] = round(ready, 2)
            print(f"  start to ready: {ready:.2f} s")
            status, body = request(server.url + "/predict", "POST", {"rows": [rows[0]]})
            assert status == 200, body
            results["runs"] += drive("panelcast", server.port, ours, plan)
            metrics = request(server.url + "/metrics")[1]
            calls = rows_ = 0.0
            for line in metrics.splitlines():
                if line.startswith("panelcast_model_calls_total"):
                    calls = float(line.split()[-1])
                if line.startswith("panelcast_model_rows_total"):
                    rows_ = float(line.split()[-1])
            print(f"  mean micro-batch: {rows_ / max(calls, 1):.1f} segments per model call")
        finally:
            server.stop()

        if args.no_mlserver:
            print("MLServer: skipped (--no-mlserver)")
        else:
            python, how = mlserver_python(args.mlserver_venv)
            if python is None:
                print(f"MLServer: not measured: {how}")
            else:
                print(
                    f"MLServer 1.7.1, adaptive batching, parallel_workers="
                    f"{args.mlserver_workers} ({how}; same model, the feature rows of the same "
                    "requests):"
                )
                bodies, expected = feature_payloads(params_file, rows)
                theirs = [http_request("/v2/models/panelcast/infer", b) for b in bodies]
                proc, port, log, ready, folder = start_mlserver(
                    python, params_file, work, args.mlserver_workers
                )
                try:
                    print(f"  start to ready: {ready:.2f} s")
                    status, answer = request(
                        f"http://127.0.0.1:{port}/v2/models/panelcast/infer", "POST", bodies[0]
                    )
                    same = status == 200 and answer["outputs"][0]["data"][0] == expected[0]
                    print(f"  MLServer's forecast equals ours: {same}")
                    results["mlserver_start_to_ready_s"] = round(ready, 2)
                    results["runs"] += drive("mlserver", port, theirs, plan)
                finally:
                    stop_process(proc)
                    log.close()
                ours32 = [r for r in results["runs"] if r["server"] == "panelcast"][-1]
                theirs32 = [r for r in results["runs"] if r["server"] == "mlserver"][-1]
                ratio = ours32["rps"] / max(theirs32["rps"], 1e-9)
                results["ratio_at_32"] = round(ratio, 2)
                print(f"  throughput ratio at concurrency 32 (panelcast / MLServer): {ratio:.2f}x")

        print("10,000 segments in one request (synthetic bundle):")
        synth_params, synth_rows = synthetic_bundle(work)
        body = json.dumps({"rows": synth_rows}).encode()
        server = Server(synth_params, workers=2, log=work / "serve-10k.log")
        try:
            ready = server.wait_ready(timeout=180)
            print(f"  start to ready with 10,000 segments: {ready:.2f} s")
            times, statuses = [], set()
            for _ in range(4):
                started = time.perf_counter()
                status, answer = request(server.url + "/predict", "POST", body, timeout=120)
                times.append(time.perf_counter() - started)
                statuses.add(status)
            assert statuses == {200}, answer
            assert len(answer["forecasts"]) == len(synth_rows)
            seg_times = []
            seg = load_params(synth_params).problem.segment_column
            names = [r[seg] for r in synth_rows]
            for _ in range(3):
                started = time.perf_counter()
                request(server.url + "/predict", "POST", {"segments": names}, timeout=120)
                seg_times.append(time.perf_counter() - started)
            results["rows_10k_s"] = [round(t, 3) for t in times]
            results["segments_10k_s"] = [round(t, 3) for t in seg_times]
            print(
                f"  10,000 rows ({len(body) / 1e6:.1f} MB of JSON): first {times[0]:.3f} s, "
                f"then median {statistics.median(times[1:]):.3f} s"
            )
            print(
                f"  10,000 segments by name (stored history): median "
                f"{statistics.median(seg_times):.3f} s"
            )
        finally:
            server.stop()
    finally:
        print(f"load average after: {os.getloadavg()}")
        print("RESULTS " + json.dumps(results))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
