"""The production cycle on a real repository fed one month at a time: it replays the
backtest's decisions, and a cycle killed at any step leaves everything consistent."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ..conftest import (
    SHORT_BACKTEST,
    build_once,
    clone_repo,
    commit_all,
    copy_repo,
    run,
    set_params,
    tool_env,
    up_to_date,
)

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).with_name("cycle_driver.py")
TXHOUSING = Path(importlib.util.find_spec("plotnine").origin).parent / "data" / "txhousing.csv"

#: A deployment trained on data up to 2009-12, tested on its last 6 months (the backtest's
#: validation periods), with the global strategy (the cycle's forecasts then equal the
#: backtest's bit for bit) and the cheap settings of the test copies.
BASE = {
    "windows.train_end": "2009-06",
    "windows.test_start": "2009-07",
    "windows.test_end": "2009-12",
    "drift.current_start": "2009-07",
    "drift.current_end": "2009-12",
    "train.strategy": "global",
    "train.search.enabled": False,
    "train.hyperparameters.max_iter": 100,
    "baseline.statistical": [],
    "backtest.end": "2005-06",
    "backtest.policies": [
        *SHORT_BACKTEST["backtest.policies"],
        {"name": "on_error", "kind": "on_error"},
        {"name": "every_1", "kind": "every", "every_periods": 1},
        {"name": "every_12", "kind": "every", "every_periods": 12},
    ],
    "backtest.gate": True,
    "cycle.policy": "on_error",
}
#: The contract of the full table asks for data up to 2015-07 and tighter missing rates
#: than the first years meet.
CONTRACT = {
    ("completeness", "last_period_not_before"): "2009-12",
    ("columns", "sales", "max_missing"): 0.15,
    ("columns", "volume", "max_missing"): 0.15,
    ("columns", "median", "max_missing"): 0.15,
    ("columns", "inventory", "max_missing"): 0.30,
}


def write_source(full: pd.DataFrame, path: Path, year: int, month: int) -> None:
    keep = full[(full["year"] < year) | ((full["year"] == year) & (full["month"] <= month))]
    keep.to_csv(path, index=False)


def use_source(repo: Path, source: Path) -> None:
    set_params(repo, {"source.uri": str(source), "source.watch": str(source)})


def _build_base(path: Path) -> None:
    """The project with data up to 2009-12 from a local file, reproduced and committed."""
    path.mkdir(parents=True)
    full = pd.read_csv(TXHOUSING)
    full.to_csv(path / "full.csv", index=False)
    write_source(full, path / "source.csv", 2009, 12)
    repo = copy_repo(path / "repo", git=False)
    set_params(repo, BASE)
    use_source(repo, path / "source.csv")
    contract = yaml.safe_load((repo / "contract.yaml").read_text())
    for keys, value in CONTRACT.items():
        node = contract
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    (repo / "contract.yaml").write_text(yaml.safe_dump(contract, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], repo)
    commit_all(repo, "the project, data up to 2009-12")
    run(["dvc", "repro"], repo)
    commit_all(repo, "repro")
    assert up_to_date(repo)


@pytest.fixture(scope="module")
def cycle_base(tmp_path_factory) -> Path:
    return build_once(tmp_path_factory, "cycle-base", _build_base)


def private_copy(base: Path, dest: Path, updates: dict | None = None) -> tuple[Path, Path]:
    """A clone of the base repository with its own growing source and DVC remote."""
    dest.mkdir(parents=True)
    source = dest / "source.csv"
    source.write_bytes((base / "source.csv").read_bytes())
    repo = clone_repo(base / "repo", dest / "repo", share_cache=True)
    use_source(repo, source)
    set_params(repo, updates or {})
    run(["dvc", "remote", "add", "--local", "-d", "-f", "storage", str(dest / "remote")], repo)
    run(["dvc", "repro"], repo)  # collect reads the new path (the same bytes)
    commit_all(repo, "private source")
    assert up_to_date(repo)
    return repo, source


def deployment_consistent(repo: Path, source: Path) -> None:
    """Every DVC output is what dvc.lock records; at most the source moved on since the
    last deployment (the cycle scores new months without rerunning the pipeline)."""
    status = json.loads(run(["dvc", "status", "--json"], repo).stdout or "{}")
    moved = {"collect": [{"changed deps": {str(source): "modified"}}]}
    assert status in ({}, moved), status


def audit_lines(repo: Path) -> list[dict]:
    text = (repo / "production" / "audit.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def cycle_commits(repo: Path) -> list[str]:
    subjects = run(["git", "log", "--format=%s"], repo).stdout.splitlines()
    return [s for s in reversed(subjects) if s.startswith("cycle ")]


# --------------------------------------------------------------------------- simulation


def replay_backtest(repo: Path, full_csv: Path, first_end: str, end: str, policy: str):
    """The backtest's replay of ``policy`` on the months the cycle saw, from the same
    deployment (the repository's params and train outputs), on the whole table: its
    per-period records and its retrain events."""
    from panelcast.core.config import load_params
    from panelcast.core.io import read_json
    from panelcast.core.periods import T
    from panelcast.data.contract import load_contract
    from panelcast.modelling.features import build_features
    from panelcast.monitoring.backtest import run_backtest
    from panelcast.pipeline.backtest import deployed_selection, replay_data
    from panelcast.pipeline.validate import validate

    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["backtest"].update(
        first_train_start=data["windows"]["train_start"],
        first_train_end=first_end,
        end=end,
        policies=[p for p in data["backtest"]["policies"] if p["name"] == policy],
    )
    data["cycle"]["policy"] = policy
    path = repo.parent / "replay-params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    params = load_params(path)
    cal = params.problem.calendar
    frame = pd.read_csv(full_csv)
    contract = load_contract(repo / "contract.yaml", calendar=params.problem.calendar)
    table, _, text = validate(frame, contract, params.problem, params.prepare, "full", "contract")
    assert table is not None, text
    features, _ = build_features(table, params.problem, params.features, params.windows)
    features = features[features[T] <= cal.parse(end)].reset_index(drop=True)
    names = ("metrics/train.json", "models/metadata.json", "models/segments/manifest.json")
    selection = deployed_selection(*(read_json(repo / n) for n in names), names=names)
    (replay,) = run_backtest(replay_data(features, params, selection))
    return replay.periods, replay.events


# on_error (the default) retrains once there and keeps the old model; every_12's first
# challenger is refused by the gate and its second promoted (2011-12): both paths replayed
@pytest.mark.parametrize(
    "policy",
    [
        pytest.param("on_error", marks=pytest.mark.xdist_group("cycle-simulation-on-error")),
        pytest.param("every_12", marks=pytest.mark.xdist_group("cycle-simulation-every-12")),
    ],
)
def test_cycle_fed_month_by_month_replays_the_backtest(cycle_base, tmp_path, policy):
    repo, source = private_copy(cycle_base, tmp_path / "sim", {"cycle.policy": policy})
    first, last = "2010-01", "2011-12"
    proc = subprocess.run(
        [
            sys.executable,
            str(DRIVER),
            "--repo",
            str(repo),
            "--full",
            str(cycle_base / "full.csv"),
            "--source",
            str(source),
            "--first",
            first,
            "--last",
            last,
        ],  # fmt: skip
        env=tool_env(repo),
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    cycles = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [c["month"] for c in cycles][:1] == [first] and len(cycles) == 24
    assert all(c["status"] == "processed" and c["exit_code"] == 0 for c in cycles), cycles

    # the audit log: one line per month, in order
    audit = audit_lines(repo)
    assert [a["period"] for a in audit] == [c["month"] for c in cycles]

    # the backtest replays the same policy on the same months from the same deployment
    records, replayed_events = replay_backtest(
        repo_at_start(repo), cycle_base / "full.csv", "2009-12", last, policy
    )
    events = {e["period"]: e for e in replayed_events}
    decided = {a["period"]: a for a in audit if a["decision"] == "retrain"}
    assert sorted(decided) == sorted(events), (sorted(decided), sorted(events))
    for period, event in events.items():
        retrain = decided[period]["retrain"]
        assert retrain["promoted"] == event["promoted"], (period, retrain, event)
        assert decided[period]["trigger"] == event["trigger"], period
        if event.get("gate_refused"):  # better than the deployed model, below the gate
            assert retrain["challenger_wape"] < retrain["champion_wape"], retrain
            assert retrain["gate_passed"] is False, retrain
    per_period = {r["period"]: r for r in records}
    assert sorted(per_period) == [a["period"] for a in audit]
    for line in audit:
        expected = per_period[line["period"]]
        assert line["live"]["n"] == expected["n"], line["period"]
        assert line["live"]["mae"] == pytest.approx(expected["mae"], rel=1e-6), line["period"]

    # the commits: one per month, a promotion moves the training window in params.yaml
    commits = cycle_commits(repo)
    assert len(commits) == 24
    promoted = [a["period"] for a in audit if (a["retrain"] or {}).get("promoted")]
    assert sum("promoted" in c and "not promoted" not in c for c in commits) == len(promoted)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    if promoted:
        last_promotion = promoted[-1]
        assert params["windows"]["test_end"] == last_promotion
        deployed = json.loads((repo / "models/deployed.json").read_text())
        assert deployed["last_period"] == last_promotion
    else:
        assert params["windows"]["test_end"] == "2009-12"
    # every cycle's commit was pushed
    assert "are in sync" in run(["dvc", "status", "--cloud"], repo).stdout
    deployment_consistent(repo, source)
    assert run(["git", "status", "--porcelain"], repo).stdout.strip() == ""
    # the latest forecasts are the next month's, by the deployed model
    forecasts = pd.read_parquet(repo / "production" / "forecasts.parquet")
    assert set(forecasts["period"]) == {"2012-01"}
    state = json.loads((repo / "production" / "state.json").read_text())
    assert set(forecasts["model_version"]) == {state["model_version"]}


def repo_at_start(repo: Path) -> Path:
    """A worktree of ``repo`` at its commit before the first cycle (the first deployment)."""
    start = run(["git", "log", "--format=%H", "--grep", "^cycle ", "--invert-grep", "-1"], repo)
    dest = repo.parent / "at-start"
    run(["git", "worktree", "add", "-q", "--detach", str(dest), start.stdout.strip()], repo)
    local = repo / ".dvc" / "config.local"  # the DVC cache it shares (git-ignored)
    if local.is_file():
        (dest / ".dvc" / "config.local").write_bytes(local.read_bytes())
    run(["dvc", "checkout", "--quiet"], dest)
    return dest


# --------------------------------------------------------------------------- SIGKILL

#: The steps a cycle announces ("cycle step NAME"), in order, and how long after the
#: announcement the kill lands (inside the step).
KILL_AT = [
    ("collect", 0.0),
    ("validate", 0.0),
    ("score", 0.0),
    ("monitor", 0.0),
    ("decide", 0.0),
    ("retrain", 4.0),
    ("promote", 1.0),
    ("forecast", 0.0),
    ("report", 0.0),
    ("commit", 0.0),
    ("push", 0.0),
    ("reload", 0.0),
]


def cycle_process(repo: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "panelcast.cli", "cycle"],
        cwd=repo,
        env=tool_env(repo),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group: the kill takes dvc's children too
    )


def kill_at(repo: Path, step: str, delay: float, deadline: float = 600) -> bool:
    """Run a cycle and SIGKILL its process group once it announces ``step``; False when
    the cycle ended without reaching it."""
    proc = cycle_process(repo)
    seen = []
    started = time.monotonic()
    for line in proc.stderr:
        seen.append(line)
        if f"cycle step {step}" in line:
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            return True
        assert time.monotonic() - started < deadline, "".join(seen[-30:])
    proc.wait(timeout=60)
    return False


@pytest.mark.xdist_group("cycle-sigkill")
def test_a_cycle_killed_at_every_step_recovers(cycle_base, tmp_path):
    # every_1 retrains at each new month; with the 2009-12 deployment's own data the
    # challenger of 2010-01 (trained to 2009-07) is compared on 2009-08..2010-01
    repo, source = private_copy(
        cycle_base,
        tmp_path / "kill",
        # a gate every challenger passes: the promotion path is the one killed
        {
            "cycle.policy": "every_1",
            "evaluate.gate.min_gain_pct": -1000.0,
            "evaluate.gate.max_wape": 10.0,
        },
    )
    before = json.loads((repo / "models/deployed.json").read_text())["version"]
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    write_source(pd.read_csv(cycle_base / "full.csv"), source, 2010, 1)
    reached = []
    for step, delay in KILL_AT:
        if step == "retrain":
            # a second cycle while one holds the lock exits at once with code 75
            first = cycle_process(repo)
            for line in first.stderr:
                if "cycle step collect" in line:
                    break
            second = run([sys.executable, "-m", "panelcast.cli", "cycle"], repo, check=False)
            assert second.returncode == 75, second.stderr
            assert "another cycle is running" in second.stderr
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=60)
        if kill_at(repo, step, delay):
            reached.append(step)
    proc = run([sys.executable, "-m", "panelcast.cli", "cycle"], repo, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # every step was reached by some run: up to the commit each killed run left nothing,
    # so the next one did the month again; killed at the push (after the commit), the next
    # run found the month done and pushed during its recovery, so none reached "reload"
    assert set(reached) == {s for s, _ in KILL_AT} - {"reload"}, reached

    audit = audit_lines(repo)
    assert [a["period"] for a in audit] == ["2010-01"], audit
    line = audit[0]
    assert line["decision"] == "retrain" and line["model_before"] == before
    commits = run(["git", "log", "--format=%s", f"{head}..HEAD"], repo).stdout.splitlines()
    assert len(commits) == 1 and commits[0].startswith("cycle 2010-01: retrain"), commits
    deployed = json.loads((repo / "models/deployed.json").read_text())["version"]
    assert deployed == line["model_after"]
    assert line["retrain"]["promoted"] and deployed != before, line["retrain"]
    assert "are in sync" in run(["dvc", "status", "--cloud"], repo).stdout
    forecasts = pd.read_parquet(repo / "production" / "forecasts.parquet")
    assert set(forecasts["period"]) == {"2010-02"} and set(forecasts["model_version"]) == {deployed}
    assert up_to_date(repo)  # promoted on the latest source: nothing moved since
    assert run(["git", "status", "--porcelain"], repo).stdout.strip() == ""
    assert not (repo / ".dvc/tmp/panelcast-cycle.inflight").exists()
    # and the next cycle with nothing new does nothing
    again = run([sys.executable, "-m", "panelcast.cli", "cycle"], repo)
    assert "nothing to do" in again.stderr
    assert len(audit_lines(repo)) == 1

    # a new month that breaks the contract is refused and alerted; the deployment stays
    full = pd.read_csv(cycle_base / "full.csv")
    write_source(full, source, 2010, 2)
    bad = pd.read_csv(source)
    bad.loc[(bad["year"] == 2010) & (bad["month"] == 2), "sales"] = -5.0
    bad.to_csv(source, index=False)
    refused = run([sys.executable, "-m", "panelcast.cli", "cycle"], repo, check=False)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "ALERT" in refused.stderr and "'sales'" in refused.stderr
    last = audit_lines(repo)[-1]
    assert last["decision"] == "refused" and "contract" in last["reason"], last
    assert json.loads((repo / "models/deployed.json").read_text())["version"] == deployed
    kept = pd.read_parquet(repo / "production" / "forecasts.parquet")
    pd.testing.assert_frame_equal(kept, forecasts)
    deployment_consistent(repo, source)
    assert run(["git", "status", "--porcelain"], repo).stdout.strip() == ""
