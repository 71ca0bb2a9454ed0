"""The production cycle's parts that need no pipeline run: lock, recovery, remotes, params,
and which serving files the service reads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from panelcast.core.config import load_params
from panelcast.core.errors import UserError
from panelcast.production.cycle import (
    INFLIGHT_FILE,
    CycleLockedError,
    cycle_lock,
    has_remote,
    policy_of,
    recover,
)
from panelcast.serving.forecaster import current_files

from ..conftest import ROOT, tool_env


def test_a_second_cycle_is_refused_while_the_lock_is_held(tmp_path):
    with cycle_lock(tmp_path):
        with pytest.raises(CycleLockedError, match="another cycle is running"):
            with cycle_lock(tmp_path):
                pass
    with cycle_lock(tmp_path):  # released: taken again
        pass


def test_the_lock_dies_with_its_process(tmp_path):
    code = (
        "import os, sys; from pathlib import Path; "
        "from panelcast.production.cycle import cycle_lock; "
        f"cm = cycle_lock(Path({str(tmp_path)!r})); cm.__enter__(); os._exit(9)"
    )
    proc = subprocess.run(["python", "-c", code], env=tool_env(ROOT), check=False)
    assert proc.returncode == 9
    with cycle_lock(tmp_path):  # the kernel released it
        pass


def _params_file(tmp_path: Path, **cycle) -> Path:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["cycle"].update(cycle)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_cycle_policy_must_name_a_backtest_policy(tmp_path):
    with pytest.raises(Exception, match=r"cycle\.policy.*must name one of backtest\.policies"):
        load_params(_params_file(tmp_path, policy="sometimes"))
    params = load_params(_params_file(tmp_path, policy=None))
    with pytest.raises(UserError, match="'cycle.policy' is not set.*never"):
        policy_of(params)
    assert policy_of(load_params(_params_file(tmp_path, policy="every_12"))).every_periods == 12


def _git_repo(path: Path) -> Path:
    env = tool_env()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True, env=env)
    subprocess.run(["dvc", "init", "-q"], cwd=path, check=True, env=env)
    (path / "params.yaml").write_text("a: 1\n")
    (path / "production").mkdir()
    (path / "production" / "audit.jsonl").write_text("")
    subprocess.run(["git", "add", "-A"], cwd=path, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", "init"], cwd=path, check=True, env=env)
    return path


def test_recovery_puts_back_what_an_interrupted_cycle_wrote(params, tmp_path, monkeypatch):
    repo = _git_repo(tmp_path)
    monkeypatch.setenv("PATH", tool_env()["PATH"])
    # the user's own uncommitted change, without an interrupted cycle: refused, kept
    (repo / "params.yaml").write_text("a: 2\n")
    with pytest.raises(UserError, match="uncommitted changes in the paths the cycle commits"):
        recover(params, repo)
    assert (repo / "params.yaml").read_text() == "a: 2\n"
    # an interrupted cycle (its marker) left a half-written period: all put back
    (repo / INFLIGHT_FILE).parent.mkdir(parents=True, exist_ok=True)
    (repo / INFLIGHT_FILE).write_text("pid 1, 2010-01\n")
    (repo / "production" / "audit.jsonl").write_text('{"period": "2010-01"}\n')
    (repo / "production" / "live.parquet").write_bytes(b"half")
    assert recover(params, repo) is True
    assert (repo / "params.yaml").read_text() == "a: 1\n"
    assert (repo / "production" / "audit.jsonl").read_text() == ""
    assert not (repo / "production" / "live.parquet").exists()
    assert not (repo / INFLIGHT_FILE).exists()
    assert recover(params, repo) is False  # nothing left


def test_has_remote_reads_the_dvc_config(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    assert not has_remote(tmp_path)
    (tmp_path / ".dvc" / "config.local").write_text("[core]\n    remote = storage\n")
    assert has_remote(tmp_path)


def test_the_service_reads_the_cycle_files_only_for_the_deployed_version(
    params, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    own = current_files(params, {"version": "v1"})
    assert own["forecasts"] == Path(params.paths.forecasts)
    state = tmp_path / params.cycle.state_dir
    state.mkdir()
    frame = pd.DataFrame({"x": [1]})
    frame.to_parquet(state / "forecasts.parquet")
    frame.to_parquet(state / "serving_state.parquet")
    (state / "state.json").write_text(json.dumps({"model_version": "v1"}))
    cycle = current_files(params, {"version": "v1"})
    assert cycle["forecasts"] == Path(params.cycle.state_dir) / "forecasts.parquet"
    assert cycle["serving_state"] == Path(params.cycle.state_dir) / "serving_state.parquet"
    # a deployment newer than the cycle's files (a promotion by hand): its own files
    assert current_files(params, {"version": "v2"}) == own


def test_the_cycle_asks_the_service_to_reload(params, tmp_path):
    """A real HTTP server on loopback receives ``POST /admin/reload``; a service that does
    not answer is a warning, not a failed cycle."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from panelcast.production.cycle import Context, StatePaths, _reload_service

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            seen.append(self.path)
            body = b'{"reloaded": true, "model_version": "v2"}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        live = params.model_copy(
            update={"cycle": params.cycle.model_copy(update={"service_url": url})}
        )
        policy = params.backtest.policies[0]
        _reload_service(Context(live, tmp_path, policy, StatePaths(tmp_path)))
        assert seen == ["/admin/reload"]
    finally:
        server.shutdown()
        server.server_close()
    # nobody listens there any more: logged, not raised
    _reload_service(Context(live, tmp_path, policy, StatePaths(tmp_path)))


def test_a_failed_command_stops_the_cycle_with_one_clear_error(tmp_path):
    from panelcast.production.cycle import CycleStepError, _checked, _dvc

    failed = subprocess.CompletedProcess(["dvc", "exp", "run"], 1, "ran 3 stages", "train failed")
    with pytest.raises(
        CycleStepError, match=r"(?s)dvc exp run x failed \(exit code 1\).*train failed"
    ):
        _checked(failed, "dvc exp run x")
    # a command past its time is stopped and reported, not waited for
    slow = _dvc(tmp_path, "--version", timeout=0.001)
    assert slow.returncode == 124 and "no end after" in slow.stderr
