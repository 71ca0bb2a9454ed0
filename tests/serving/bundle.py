"""Deployed bundles built from data, and a served ``panelcast serve`` process.

:func:`build_bundle` runs the pipeline functions in memory on the real default data
(the txhousing table inside the plotnine wheel), with the search disabled and fewer
boosting rounds, and writes what the predict stage writes into a folder, with a
``params.yaml`` whose ``paths:`` point there (absolute) and a copy of ``contract.yaml``.
The benchmark uses it too (with the configured boosting rounds). With ``train.strategy``
``per_segment`` or ``best_of`` (:data:`MIXED`) it deploys the segment models too, as the
train, evaluate and predict stages do.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..conftest import ROOT, apply_dotted

#: A valid request row (a city's next month) in the source schema.
GOOD = {
    "city": "Austin",
    "year": 2015,
    "month": 8,
    "sales": 3000.0,
    "volume": None,
    "median": 250000.0,
    "listings": 8000.0,
    "inventory": 2.5,
}


PATH_FILES = {
    "contract": "contract.yaml",
    "snapshot": "data/raw/snapshot.parquet",
    "validated": "data/validated.parquet",
    "features": "data/features.parquet",
    "baseline": "data/baseline.parquet",
    "predictions": "data/predictions.parquet",
    "model": "models/model.skops",
    "model_metadata": "models/metadata.json",
    "segment_models": "models/segments",
    "reference": "models/reference.json",
    "deployed_model": "models/deployed.skops",
    "deployed_metadata": "models/deployed.json",
    "deployed_segments": "models/deployed_segments",
    "serving_state": "models/serving_state.parquet",
    "forecasts": "data/forecasts.parquet",
    "metrics": "metrics",
    "plots": "plots",
}
#: Fast settings for tests: the global model alone (no search, 60 boosting rounds), a gate
#: such a model passes. The mixed bundle (:data:`MIXED`) routes segments to their own.
FAST = {
    "baseline.statistical": ["theta"],  # AutoARIMA alone costs about 100 s of CPU
    "train.strategy": "global",
    "train.search.enabled": False,
    "train.hyperparameters.max_iter": 60,
    "evaluate.gate.min_gain_pct": -50.0,
}
#: Each segment's own model besides the global one, among cheap families (theta and
#: seasonal_naive fit in milliseconds; sklearn is the global estimator on one segment;
#: global+theta the mean of the global model and theta).
MIXED = {
    "train.strategy": "best_of",
    "train.per_segment": {"families": ["seasonal_naive", "theta", "sklearn", "global+theta"]},
}


def bundle_params(dest: Path, updates: dict | None = None) -> dict:
    """The repository's params with ``updates`` (dotted keys) and paths under ``dest``."""
    data = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    apply_dotted(data, updates or {})
    data["paths"] = {k: str(dest / v) for k, v in PATH_FILES.items()}
    return data


def write_params(dest: Path, data: dict) -> Path:
    path = dest / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def build_bundle(dest: Path, updates: dict | None = None, table=None, contract=None):
    """Fit and deploy a model on the real data (or ``table``, a prepared panel, with
    ``contract``, a mapping written as its ``contract.yaml``) into ``dest``; returns the
    params file, the params and the validated table."""
    from panelcast.core.config import load_params
    from panelcast.core.io import write_bytes, write_json, write_parquet
    from panelcast.data.contract import load_contract
    from panelcast.modelling.features import build_features
    from panelcast.modelling.model import loads_model
    from panelcast.modelling.routing import Router, write_model_dir
    from panelcast.pipeline.baseline import baseline
    from panelcast.pipeline.collect import collect
    from panelcast.pipeline.evaluate import evaluate
    from panelcast.pipeline.predict import predict
    from panelcast.pipeline.train import train
    from panelcast.pipeline.validate import validate

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if contract is None:
        (dest / "contract.yaml").write_text((ROOT / "contract.yaml").read_text())
    else:
        (dest / "contract.yaml").write_text(yaml.safe_dump(contract, sort_keys=False))
    params_file = write_params(dest, bundle_params(dest, {**FAST, **(updates or {})}))
    params = load_params(params_file)
    if table is None:
        raw, record = collect(params.source, params.problem)
        sha = record["source"]["sha256"] if "source" in record else record["sha256"]
        rules = load_contract(params.paths.contract, params.problem.calendar)
        table, report, text = validate(
            raw, rules, params.problem, params.prepare, "snapshot", "contract"
        )
        assert table is not None, text
    else:
        sha = "0" * 64
    features, _ = build_features(table, params.problem, params.features, params.windows)
    rules, rule_metrics = baseline(table, features, params)
    trained = train(features, sha, params)
    paths = params.paths
    write_model_dir(paths.segment_models, trained.manifest, trained.segment_files)
    model = loads_model(trained.model_bytes)
    router = Router.load(
        paths.segment_models,
        model,
        params.problem.calendar.season_length,
        params.problem.segment_column,
        global_sha256=trained.metadata["sha256"],
    )
    cols = trained.metadata["features"]
    ev = evaluate(features, rules, rule_metrics, router, cols, params)
    dep = predict(
        table, features, model, cols, ev.predictions, ev.metrics, sha, params, router=router
    )
    write_bytes(paths.deployed_model, dep.model_bytes)
    write_model_dir(paths.deployed_segments, dep.segment_manifest, dep.segment_files)
    write_json(paths.deployed_metadata, dep.metadata)
    write_parquet(paths.serving_state, dep.serving_state)
    write_parquet(paths.forecasts, dep.forecasts)
    return params_file, params, table


def deployed_files(params) -> list[Path]:
    """The files a deployment replaces: the model, its metadata, the serving state, the
    batch forecasts, and the segment models' series and manifest (the same in every
    bundle of the global strategy, which has no other file there)."""
    p = params.paths
    files = (p.deployed_model, p.deployed_metadata, p.serving_state, p.forecasts)
    segments = Path(p.deployed_segments)
    return [Path(x) for x in files] + [segments / "series.parquet", segments / "manifest.json"]


# --------------------------------------------------------------------------- a server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(params_file: Path) -> list[str]:
    """`panelcast serve` of the bundle whose params are ``params_file``, on a free port."""
    panelcast = str(Path(sys.executable).parent / "panelcast")
    return [panelcast, "serve", "--params", str(params_file), "--port", "0"]


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = str(Path(sys.executable).parent) + os.pathsep + out.get("PATH", "")
    out["PYTHONPATH"] = str(ROOT / "src")
    out["DVC_NO_ANALYTICS"] = "1"
    return out


class Server:
    """``panelcast serve`` as a subprocess on a free loopback port; stop() ends it."""

    def __init__(
        self, params_file: Path, workers: int = 1, extra: tuple = (), log=None, environ=None
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log or Path(params_file).parent / f"serve-{self.port}.log"
        self.cmd = [
            str(Path(sys.executable).parent / "panelcast"),
            "serve",
            "--params",
            str(params_file),
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            *extra,
        ]
        self.started = time.perf_counter()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=Path(params_file).parent,
            env={**env(), **(environ or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds from the start of the process to the first 200 of /v2/health/ready."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"server not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return Path(self.log_path).read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serving(params_file: Path, workers: int = 1):
    """A generator for fixtures: ``panelcast serve`` ready on ``params_file``, stopped after."""
    srv = Server(params_file, workers=workers)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def batch_predict(params_file: Path, source: Path, out: Path) -> subprocess.CompletedProcess:
    """``panelcast --params PARAMS predict --input SOURCE --output OUT`` (the batch CLI)."""
    cli = str(Path(sys.executable).parent / "panelcast")
    return subprocess.run(
        [
            cli,
            "--params",
            str(params_file),
            "predict",
            "--input",
            str(source),
            "--output",
            str(out),
        ],
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def request(url: str, method: str = "GET", body=None, timeout: float = 30):
    """(status, parsed JSON or text) of one request."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def copy_bundle(source_params_file: Path, dest: Path, updates: dict | None = None) -> Path:
    """A copy of a built bundle in ``dest`` (its params with paths under ``dest`` and
    ``updates``); returns the new params file."""
    import shutil

    source = Path(source_params_file).parent
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("models", "data"):
        shutil.copytree(source / name, dest / name, dirs_exist_ok=True)
    shutil.copy2(source / "contract.yaml", dest / "contract.yaml")
    data = yaml.safe_load(Path(source_params_file).read_text())
    apply_dotted(data, updates or {})
    data["paths"] = {k: str(dest / v) for k, v in PATH_FILES.items()}
    return write_params(dest, data)


# --------------------------------------------------------------------------- other time axes


#: Fast settings of the synthetic bundles: their gate is not the point (WAPE up to 100%).
SYNTHETIC = {"evaluate.gate.max_wape": 1.0, "problem.named_periods": []}


def daily_case(frequency: str = "D", contract_type: str = "string") -> dict:
    """A single series (no segment column) with a date column written ``%d/%m/%Y``: daily
    electricity load with a weekly season (or the same per week for ``W``); the prepared
    panel, its params updates and its contract."""
    rng = np.random.default_rng(11)
    if frequency == "D":
        dates = pd.date_range("2019-01-01", "2022-12-31", freq="D")
        season = 200 * np.sin(2 * np.pi * dates.day_of_week.to_numpy() / 7)
        windows = ("2019-03-01", "2022-06-30", "2022-07-01", "2022-12-31")
        backtest = ("2019-03-01", "2021-12-31", "2022-12-31")
    else:  # weeks start on Monday (the calendar's weeks)
        dates = pd.date_range("2012-01-02", "2022-12-26", freq="W-MON")
        season = 200 * np.sin(2 * np.pi * dates.isocalendar().week.to_numpy(float) / 52)
        windows = ("2013-01-07", "2020-12-28", "2021-01-04", "2022-12-26")
        backtest = ("2013-01-07", "2017-12-25", "2022-12-26")
    n = len(dates)
    temp = 15 + 10 * np.sin(2 * np.pi * np.arange(n) / 365.25) + rng.normal(0, 2, n)
    load = 1000 + season + np.arange(n) * 0.2 - 5 * temp + rng.normal(0, 30, n)
    load[rng.random(n) < 0.02] = np.nan
    table = pd.DataFrame(
        {
            "series": "load",
            "date": dates.to_numpy(dtype="datetime64[ns]"),
            "load": load.round(1),
            "temp": temp.round(2),
        }
    )
    updates = {
        **SYNTHETIC,
        "problem.segment": None,
        "problem.time": {"frequency": frequency, "column": "date", "format": "%d/%m/%Y"},
        "problem.target": "load",
        "problem.target_label": "Electricity load",
        "problem.unit": "MWh",
        "features.exogenous": ["temp"],
        "windows.train_start": windows[0],
        "windows.train_end": windows[1],
        "windows.test_start": windows[2],
        "windows.test_end": windows[3],
        "drift.current_start": windows[2],
        "drift.current_end": windows[3],
        "backtest.first_train_start": backtest[0],
        "backtest.first_train_end": backtest[1],
        "backtest.end": backtest[2],
    }
    contract = {
        "key": ["date"],
        "min_rows": 1,
        "extra_columns": "error",
        "time": {"no_future": True},
        "columns": {
            "date": {"type": contract_type},
            "load": {"type": "number", "nullable": True, "min": 0, "max": 100000},
            "temp": {"type": "number", "nullable": True, "min": -60, "max": 60},
        },
    }
    return {"table": table, "updates": updates, "contract": contract}


REGIONS = ["Central", "East", "North", "South", "West"]


def quarterly_case() -> dict:
    """Five regions, quarterly sales in year + quarter columns (1990-Q1..2019-Q4)."""
    rng = np.random.default_rng(12)
    parts = []
    for k, region in enumerate(REGIONS):
        t = np.arange(1990 * 4, 2020 * 4)
        quarter = t % 4 + 1
        level = 500 * (k + 1) * (1 + 0.005 * (t - t[0]))
        sales = (
            level * (1 + 0.15 * np.sin(2 * np.pi * quarter / 4)) * rng.lognormal(0, 0.05, len(t))
        )
        price = 100 + 0.3 * (t - t[0]) + rng.normal(0, 2, len(t))
        parts.append(
            pd.DataFrame(
                {
                    "region": region,
                    "year": t // 4,
                    "quarter": quarter,
                    "sales": sales.round(1),
                    "price": price.round(2),
                }
            )
        )
    table = pd.concat(parts, ignore_index=True)
    table.loc[rng.random(len(table)) < 0.02, "price"] = np.nan
    updates = {
        **SYNTHETIC,
        "problem.segment": "region",
        "problem.time": {"frequency": "Q", "year_column": "year", "period_column": "quarter"},
        "problem.target": "sales",
        "problem.target_label": "Regional sales",
        "problem.unit": "units",
        "features.exogenous": ["price"],
        "windows.train_start": "1993-Q1",
        "windows.train_end": "2015-Q4",
        "windows.test_start": "2016-Q1",
        "windows.test_end": "2019-Q4",
        "drift.current_start": "2016-Q1",
        "drift.current_end": "2019-Q4",
        "backtest.first_train_start": "1993-Q1",
        "backtest.first_train_end": "2005-Q4",
        "backtest.end": "2019-Q4",
    }
    contract = {
        "key": ["region", "year", "quarter"],
        "min_rows": 1,
        "extra_columns": "error",
        "time": {"no_future": True},
        "columns": {
            "region": {"type": "string", "allowed": REGIONS},
            "year": {"type": "integer", "min": 1900, "max": 2100},
            "quarter": {"type": "integer", "min": 1, "max": 4},
            "sales": {"type": "number", "nullable": True, "min": 0, "max": 1000000},
            "price": {"type": "number", "nullable": True, "min": 0, "max": 10000},
        },
    }
    return {"table": table, "updates": updates, "contract": contract}
