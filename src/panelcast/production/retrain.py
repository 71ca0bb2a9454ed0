"""Retrain on demand: read the drift verdict; when it says retrain, move the windows forward
and run the pipeline as a DVC experiment; promote it only if the evaluation gate passes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..core.config import Params
from ..core.io import read_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """The windows of the retrained model."""

    train_end: str
    test_start: str
    test_end: str

    def set_args(self) -> list[str]:
        """``-S`` arguments for ``dvc exp run``."""
        return [
            "-S",
            f"windows.train_end={self.train_end}",
            "-S",
            f"windows.test_start={self.test_start}",
            "-S",
            f"windows.test_end={self.test_end}",
            "-S",
            f"drift.current_start={self.test_start}",
            "-S",
            f"drift.current_end={self.test_end}",
        ]


def plan(params: Params, data_end: str) -> Plan | None:
    """Windows that train on everything but the latest ``retrain.test_periods`` periods of
    ``problem.time`` (``data_end`` is the data's last period, in its text form).

    Returns None when the training window cannot move forward.
    """
    cal = params.problem.calendar
    end = cal.parse(data_end)
    test_start = end - params.retrain.test_periods + 1
    train_end = test_start - 1
    if train_end <= cal.parse(params.windows.train_end):
        return None
    return Plan(cal.format(train_end), cal.format(test_start), cal.format(end))


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # each stage command sets PYTHONPATH=src itself: the experiment runs its own code
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    cmd = [str(Path(sys.executable).with_name("dvc")), *args]
    logger.info("$ dvc %s", " ".join(args))
    return subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True)


def retrain(params: Params, root: Path = Path(".")) -> dict:
    """Act on ``metrics/drift.json``; returns what was decided (also logged)."""
    drift = read_json(root / "metrics/drift.json")
    if not drift.get("drifted"):
        logger.info("drift verdict: no retraining needed; nothing to do")
        return {"action": "none", "reason": "no drift"}
    logger.info("drift verdict: retrain (%s)", "; ".join(drift.get("reasons", [])[-1:]))
    data_end = read_json(root / "metrics/collect.json")["time_span"]["last"]
    new = plan(params, data_end)
    if new is None:
        logger.info(
            "the training window already ends %s before the data (%s)",
            params.problem.calendar.count(params.retrain.test_periods),
            data_end,
        )
        return {"action": "none", "reason": "training window already at the end of the data"}
    name = f"{params.retrain.experiment_prefix}-{new.train_end}"
    proc = _dvc("exp", "run", "--temp", "-n", name, *new.set_args(), cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(
            f"dvc exp run {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    shown = _dvc("exp", "show", "--json", cwd=root)
    gate = _gate_of(json.loads(shown.stdout), name)
    result = {"action": "experiment", "experiment": name, "windows": new.__dict__, **gate}
    if gate["gate_passed"]:
        applied = _dvc("exp", "apply", name, cwd=root)
        if applied.returncode != 0:
            raise RuntimeError(f"dvc exp apply {name} failed: {applied.stderr}")
        result["action"] = "promoted"
        logger.info(
            "experiment %s passed the gate (gain %.2f%%): applied to the workspace; "
            "commit it to deploy",
            name,
            gate["gain_pct"],
        )
    else:
        result["action"] = "refused"
        logger.warning(
            "experiment %s did not pass the gate (%s); the deployed model is kept. "
            "Inspect it with `dvc exp show`.",
            name,
            "; ".join(gate["gate_failures"]),
        )
    return result


def _gate_of(shown: list, name: str) -> dict:
    """The evaluate metrics of experiment ``name`` from ``dvc exp show --json``."""
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                if rev.get("name") == name:
                    ev = rev["data"]["metrics"]["metrics/evaluate.json"]["data"]
                    return {
                        "gate_passed": bool(ev["gate_passed"]),
                        "gain_pct": ev["gain_pct"],
                        "gate_failures": ev.get("gate_failures", []),
                        "model_mae": ev["model"]["mae"],
                        "rule_mae": ev["best_rule"]["mae"],
                    }
    raise RuntimeError(f"experiment {name!r} not found in `dvc exp show --json`.")
