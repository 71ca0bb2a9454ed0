"""The production cycle: each new period of the source ingested, the deployed model scored
on it, monitored, retrained when the policy says so, redeployed, and reported.

One call of :func:`run_cycle` (``panelcast cycle``, ``make cycle``) does, in order:

1. **collect** the source (``params.source``) and stop early when it holds no labelled
   period after the last one processed (``<state_dir>/state.json``, else the deployed
   model's last period);
2. **validate** it against the data contract; a breach is refused and alerted (exit code
   2, an audit line), the deployed model stays;
3. **score** the deployed model (the champion) on each new period: its one-step forecast
   from the periods before, against the values now known, and the best rule's forecast
   beside it, per segment (``<state_dir>/live.parquet``);
4. **monitor**: the live error over the latest ``backtest.error_window_periods`` against
   the model's validation error and against the best rule, overall and per segment, and
   the drift of the latest ``backtest.drift_window_periods`` against the training
   reference;
5. **decide** with the policy ``cycle.policy`` of ``backtest.policies``, through the same
   function the backtest replays (:func:`panelcast.monitoring.policy.decide`);
6. **retrain** as a DVC experiment (``dvc exp run --temp``: the deployed files stay in
   place while it runs) trained up to ``backtest.validation_periods`` before now and
   tested on those periods; the challenger is **promoted** only if its WAPE there is
   below the champion's live WAPE on the same periods and, with ``backtest.gate``, it
   passes ``evaluate.gate`` (``dvc exp apply``), as the backtest does;
7. **forecast** the next period with the deployed model (``<state_dir>/forecasts.parquet``,
   and the history the service needs, ``<state_dir>/serving_state.parquet``);
8. **record**: one JSON line appended to ``<state_dir>/audit.jsonl``, the report
   (``dvc repro -s report`` when dvc.yaml has that stage), then **one git commit** of
   ``params.yaml``, ``dvc.lock``, ``metrics/``, ``plots/`` and ``<state_dir>/``: every
   cycle, and so every promotion, is a reviewable commit;
9. **push** the artefacts (``dvc push``, when ``cycle.push`` and a DVC remote is set) and
   **reload** the HTTP service (``POST <cycle.service_url>/admin/reload``).

**Safety.** A lock (``.dvc/tmp/panelcast-cycle.lock``, ``flock``: the kernel drops it when
the process dies) lets one cycle run at a time; a second exits with code 75. The git
commit is the cycle's only commit point: a cycle killed before it leaves a marker
(``.dvc/tmp/panelcast-cycle.inflight``), and the next cycle puts the paths above back as
they were committed (``git checkout``, ``git clean`` of the state folder, ``dvc checkout``)
and processes the period again; a cycle killed after it has processed the period, and
the next one pushes and reloads what is committed (both are idempotent).

**Several new periods at once** (a missed run): each is scored in order, and one
decision is taken at the latest, over monitors that include them all.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import Params, PolicySpec
from ..core.errors import UserError
from ..core.io import atomic_write, dumps_json, read_json, write_json, write_parquet
from ..core.periods import T
from ..modelling.features import period_of
from ..modelling.metrics import scores
from ..modelling.rules import predict_rules
from ..modelling.statistical import is_statistical

logger = logging.getLogger(__name__)

#: Exit code when another cycle holds the lock (EX_TEMPFAIL: try again later).
LOCKED_EXIT = 75
#: Where the lock and the in-flight marker live (git-ignored, inside the DVC repository).
LOCK_FILE = Path(".dvc/tmp/panelcast-cycle.lock")
INFLIGHT_FILE = Path(".dvc/tmp/panelcast-cycle.inflight")
PUSHED_FILE = Path(".dvc/tmp/panelcast-cycle.pushed")  # the last commit whose push succeeded
#: What a cycle commits (besides its state folder).
COMMITTED = ("params.yaml", "dvc.lock", "metrics", "plots")
#: Columns of ``live.parquet`` besides the segment column.
LIVE_COLUMNS = ("period", "actual", "forecast", "rule_forecast", "model_version")


class CycleLockedError(UserError):
    """Another cycle is running."""


class ContractBreach(UserError):
    """The new source breaks the data contract: refused, the deployed model is kept."""


@dataclass
class StatePaths:
    """The files of the cycle's state folder (``cycle.state_dir``)."""

    root: Path

    @property
    def audit(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def live(self) -> Path:
        return self.root / "live.parquet"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def forecasts(self) -> Path:
        return self.root / "forecasts.parquet"

    @property
    def serving_state(self) -> Path:
        return self.root / "serving_state.parquet"


@dataclass
class Outcome:
    """What one cycle did (also the body of its audit line)."""

    status: str  # "no_new_period", "processed", "refused"
    audit: dict = field(default_factory=dict)
    exit_code: int = 0


# --------------------------------------------------------------------------- commands


def _run(cmd: list[str], cwd: Path, timeout: float | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(
        cmd, cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout, check=False
    )


def _dvc(root: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    logger.info("$ dvc %s", " ".join(args))
    cmd = [str(Path(sys.executable).with_name("dvc")), *args]
    try:
        return _run(cmd, root, timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(
            cmd, 124, "", f"dvc {' '.join(args)}: no end after {timeout:.0f} s (stopped)"
        )


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(["git", *args], root)


class CycleStepError(UserError):
    """A command the cycle runs (git, dvc) failed: the month is left for the next cycle,
    which puts back what this one half-wrote and tries again."""


def _checked(proc: subprocess.CompletedProcess, what: str) -> str:
    if proc.returncode != 0:
        raise CycleStepError(
            f"{what} failed (exit code {proc.returncode}):\n{proc.stdout[-2000:]}\n"
            f"{proc.stderr[-2000:]}"
        )
    return proc.stdout


# --------------------------------------------------------------------------- lock, recovery


@contextmanager
def cycle_lock(root: Path) -> Iterator[None]:
    """Hold the cycle lock, or raise :class:`CycleLockedError` at once."""
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "unknown"
            raise CycleLockedError(
                f"{path}: another cycle is running (pid {holder}); this one exits without "
                f"doing anything: run it again when that one has ended."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock


def _owned_paths(params: Params) -> list[str]:
    return [*COMMITTED, params.cycle.state_dir]


def recover(params: Params, root: Path) -> bool:
    """Put back what an interrupted cycle left half-written; True if there was one.

    Without the in-flight marker, uncommitted changes to the cycle's paths are the user's:
    the cycle refuses to run over them rather than commit or discard them.
    """
    owned = _owned_paths(params)
    dirty = _checked(_git(root, "status", "--porcelain", "--", *owned), "git status")
    marker = root / INFLIGHT_FILE
    if not marker.exists():
        if dirty.strip():
            raise UserError(
                f"uncommitted changes in the paths the cycle commits ({', '.join(owned)}):\n"
                f"{dirty.rstrip()}\ncommit or stash them first: the cycle commits its own "
                f"changes to these paths and would mix them with yours."
            )
        return False
    logger.warning(
        "an interrupted cycle (%s) left changes: putting back the committed %s",
        marker.read_text().strip(),
        ", ".join(owned),
    )
    existing = [p for p in owned if (root / p).exists() or _tracked(root, p)]
    _checked(_git(root, "checkout", "HEAD", "--", *existing), "git checkout")
    _checked(_git(root, "clean", "-fdq", "--", params.cycle.state_dir), "git clean")
    _checked(_dvc(root, "checkout", "--force", "--quiet"), "dvc checkout")
    marker.unlink()
    return True


def _tracked(root: Path, path: str) -> bool:
    return bool(_git(root, "ls-files", "--", path).stdout.strip())


# --------------------------------------------------------------------------- the cycle


@dataclass
class Context:
    """Everything a cycle reads once."""

    params: Params
    root: Path
    policy: PolicySpec
    state: StatePaths
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a step; its start is logged (``cycle step NAME``)."""
        logger.info("cycle step %s", name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - started, 3)


def policy_of(params: Params) -> PolicySpec:
    """The backtest policy the cycle applies (``cycle.policy``)."""
    name = params.cycle.policy
    if name is None:
        names = [p.name for p in params.backtest.policies]
        raise UserError(
            f"params key 'cycle.policy' is not set: name the retraining policy the cycle "
            f"applies, one of backtest.policies {names}."
        )
    return next(p for p in params.backtest.policies if p.name == name)


def run_cycle(params: Params, root: Path = Path(".")) -> Outcome:
    """One production cycle (see the module docstring); the lock is held throughout."""
    root = root.resolve()
    policy = policy_of(params)
    before = Path.cwd()
    os.chdir(root)  # params.paths are relative to the repository
    try:
        with cycle_lock(root):
            ctx = Context(params, root, policy, StatePaths(root / params.cycle.state_dir))
            with ctx.step("recover"):
                recover(params, root)
                if _unpushed_cycle(root):
                    _push(ctx)
            return _cycle(ctx)
    finally:
        os.chdir(before)


def _cycle(ctx: Context) -> Outcome:
    params, root = ctx.params, ctx.root
    cal = params.problem.calendar
    state = _read_state(ctx)
    with ctx.step("collect"):
        frame, record = _collect(params, root)
        last_seen = record.get("time_span") or {}
    with ctx.step("validate"):
        table, breach = _validate(params, root, frame)
    if table is None:
        return _refuse(ctx, state, breach)
    t = period_of(table, params.problem).to_numpy()
    target = params.problem.target
    labelled = np.unique(t[table[target].notna().to_numpy()])
    new = [int(p) for p in labelled if p > state["last_period"]]
    if not new:
        logger.info(
            "no new %s: the source ends %s, the last processed %s is %s; nothing to do",
            cal.unit,
            last_seen.get("last"),
            cal.unit,
            cal.format(state["last_period"]),
        )
        return Outcome("no_new_period")
    period = new[-1]
    logger.info("new %s(s): %s", cal.unit, ", ".join(cal.format(p) for p in new))
    _mark_inflight(root, period, cal.format(period))

    from ..serving.forecaster import Forecaster

    champion = Forecaster.load(params, allow_failed_gate=True)
    with ctx.step("score"):
        live_new = _score(ctx, champion, table, t, new)
        live = _append_live(ctx, live_new)
    with ctx.step("monitor"):
        monitors = _monitors(ctx, live, table, period, state)
    with ctx.step("decide"):
        from ..monitoring.policy import decide

        decision = decide(ctx.policy, params.backtest, monitors["observation"])
        logger.info(
            "decision (%s, policy %s): %s",
            "retrain" if decision.retrain else ("per segment" if decision.segments else "keep"),
            ctx.policy.name,
            decision.reason,
        )
    retrain = None
    if decision.retrain:
        with ctx.step("retrain"):
            retrain = _retrain(ctx, live, period, champion.version)
        state["last_retrain"] = period
        if retrain["promoted"]:
            params = _reload_params(ctx)
            state["kept_in_a_row"] = 0
            state["segment_refits"] = {}  # the new deployment refits every segment
        else:
            state["kept_in_a_row"] = int(state.get("kept_in_a_row", 0)) + 1
    elif decision.segments:
        with ctx.step("refit_segments"):
            _refit_segments(ctx, table, t, period, decision.segments, champion.version)
        refits = dict(state.get("segment_refits", {}))
        refits.update({name: cal.format(period) for name in decision.segments})
        state["segment_refits"] = refits
    with ctx.step("forecast"):
        deployed = Forecaster.load(params, allow_failed_gate=True)
        forecasts, serving_state = _next_forecasts(ctx, deployed, table, t, period)
        write_parquet(ctx.state.forecasts, forecasts)
        write_parquet(ctx.state.serving_state, serving_state)
    state.update(
        {
            "last_period": period,
            "model_version": deployed.version,
            "last_source_sha256": record["source"].get("sha256"),
        }
    )
    audit = {
        "period": cal.format(period),
        "periods": [cal.format(p) for p in new],
        "decision": (
            "retrain" if decision.retrain else ("per_segment" if decision.segments else "keep")
        ),
        "trigger": decision.trigger,
        "reason": decision.reason,
        "look": decision.look,
        "policy": ctx.policy.name,
        "live": monitors["live"],
        "drift": monitors["drift"],
        "segments_degraded": list(decision.segments),
        "retrain": retrain,
        "model_before": champion.version,
        "model_after": deployed.version,
        "source_sha256": record["source"].get("sha256"),
    }
    return _finish(ctx, state, audit)


# --------------------------------------------------------------------------- steps


def _read_state(ctx: Context) -> dict:
    """The last processed period and retrain (calendar integers)."""
    cal = ctx.params.problem.calendar
    if ctx.state.state.is_file():
        saved = read_json(ctx.state.state)
        return {
            **saved,
            "last_period": cal.parse(saved["last_period"]),
            "last_retrain": cal.parse(saved["last_retrain"]),
        }
    metadata = read_json(ctx.root / ctx.params.paths.deployed_metadata)
    last = cal.parse(metadata["last_period"])
    return {"last_period": last, "last_retrain": last, "kept_in_a_row": 0, "segment_refits": {}}


def _collect(params: Params, root: Path) -> tuple[pd.DataFrame, dict]:
    from ..pipeline.collect import collect

    tmp = root / ".dvc" / "tmp"
    return collect(params.source, params.problem, tmp if tmp.is_dir() else None)


def _validate(params: Params, root: Path, frame: pd.DataFrame) -> tuple[pd.DataFrame | None, str]:
    from ..data.contract import load_contract
    from ..pipeline.validate import validate

    contract_path = root / params.paths.contract
    contract = load_contract(contract_path, calendar=params.problem.calendar)
    table, result, text = validate(
        frame, contract, params.problem, params.prepare, params.source.uri, str(contract_path)
    )
    return table, text


def _refuse(ctx: Context, state: dict, text: str) -> Outcome:
    lines = [line for line in text.splitlines() if line.strip()]
    logger.error("ALERT: the new source breaks the data contract; the deployed model stays")
    for line in lines[:20]:
        logger.error("  %s", line)
    _mark_inflight(ctx.root, state["last_period"], "refused")
    state.setdefault("model_version", None)
    audit = {
        "period": None,
        "decision": "refused",
        "trigger": "contract",
        "reason": "the new source breaks the data contract: " + "; ".join(lines[:5]),
        "policy": ctx.policy.name,
        "retrain": None,
    }
    outcome = _finish(ctx, state, audit, status="refused")
    outcome.exit_code = 2
    return outcome


def _mark_inflight(root: Path, period: int, label: str) -> None:
    head = _git(root, "rev-parse", "HEAD").stdout.strip()
    atomic_write(
        root / INFLIGHT_FILE,
        lambda tmp: tmp.write_text(f"pid {os.getpid()}, {label}, from commit {head[:12]}\n"),
    )


def _source_rows(ctx: Context, table: pd.DataFrame, t: np.ndarray, after: int, until: int):
    from ..pipeline.predict import source_columns

    keep = (t > after) & (t <= until)
    return table.loc[keep, source_columns(ctx.params)].reset_index(drop=True)


def _score(
    ctx: Context, champion: Any, table: pd.DataFrame, t: np.ndarray, new: list[int]
) -> pd.DataFrame:
    """The champion's and the best rule's forecasts of each new period, with the actuals."""
    params = ctx.params
    seg, target, cal = params.problem.segment_column, params.problem.target, params.problem.calendar
    last_state = int(period_of(champion.state, params.problem).max())
    rule = str(read_json(ctx.root / params.paths.metric("baseline"))["best_rule"])
    rules = _rule_forecasts(ctx, table, t, rule)
    known = champion.segment_set
    out = []
    for period in new:
        rows = _source_rows(ctx, table, t, last_state, period - 1)
        rows = rows[rows[seg].astype(str).isin(known)] if seg in rows.columns else rows
        fc = champion.forecast(rows, segments=list(champion.segments), checked=True)
        actual = table.loc[t == period, [seg, target]].rename(columns={target: "actual"})
        actual[seg] = actual[seg].astype(str)
        frame = actual.merge(fc[[seg, "forecast"]].astype({seg: str}), on=seg, how="left")
        frame = frame.merge(rules[rules["t"] == period][[seg, "rule_forecast"]], on=seg, how="left")
        frame["period"] = cal.format(period)
        frame["model_version"] = champion.version
        frame = frame[frame["actual"].notna()]
        unknown = sorted(set(frame.loc[frame["forecast"].isna(), seg]))
        if unknown:
            logger.warning(
                "%s: %d segment(s) without a forecast of the deployed model (new segments or "
                "too short a history), not scored: %s",
                cal.format(period),
                len(unknown),
                unknown[:5],
            )
        frame = frame[frame["forecast"].notna()]
        s = scores(frame["actual"], frame["forecast"]) if len(frame) else {}
        logger.info(
            "%s: live MAE %s, WAPE %s over %d segment(s) (rule %s MAE %s)",
            cal.format(period),
            s.get("mae"),
            s.get("wape"),
            len(frame),
            rule,
            scores(frame["actual"], frame["rule_forecast"])["mae"] if len(frame) else None,
        )
        out.append(frame[[seg, *LIVE_COLUMNS]])
    return pd.concat(out, ignore_index=True)


def _rule_forecasts(ctx: Context, table: pd.DataFrame, t: np.ndarray, rule: str) -> pd.DataFrame:
    """The best rule's forecast of every row of ``table`` (rules read only the past)."""
    params = ctx.params
    seg, target = params.problem.segment_column, params.problem.target
    grid = pd.DataFrame(
        {seg: table[seg].astype(str).to_numpy(), T: t, "y": table[target].to_numpy(dtype=float)}
    )
    train_end = params.problem.calendar.parse(params.windows.train_end)
    out, _ = predict_rules(grid, params.problem, [rule], pd.Series(t <= train_end).to_numpy())
    return pd.DataFrame({seg: grid[seg], "t": t, "rule_forecast": out[rule].to_numpy()})


def _refit_segments(
    ctx: Context,
    table: pd.DataFrame,
    t: np.ndarray,
    period: int,
    segments: tuple[str, ...],
    version: str,
) -> None:
    """Refit the statistical models of ``segments`` alone, on their series up to
    ``period``: their series are stored for the deployed version
    (:data:`~panelcast.serving.segments.CYCLE_SERIES`), which the forecaster and the
    service refit them on; the global model and the other segments stay as deployed."""
    from ..core.periods import TARGET
    from ..pipeline.predict import stat_series_frame
    from ..serving.segments import CYCLE_SERIES

    params = ctx.params
    seg = params.problem.segment_column
    upto = t <= period
    frame = pd.DataFrame(
        {
            seg: table.loc[upto, seg].astype(str).to_numpy(),
            T: t[upto],
            TARGET: table.loc[upto, params.problem.target].to_numpy(dtype=float),
        }
    )
    series = stat_series_frame(frame, list(segments), seg)
    series["model_version"] = version
    series["refit_period"] = params.problem.calendar.format(period)
    path = ctx.state.root / CYCLE_SERIES
    if path.is_file():
        old = pd.read_parquet(path)
        old = old[(old["model_version"] == version) & ~old[seg].isin(list(segments))]
        series = pd.concat([old, series], ignore_index=True)
    series = series.sort_values([seg, T], kind="stable").reset_index(drop=True)
    write_parquet(path, series)
    logger.info(
        "refitted %d segment model(s) alone on their series up to %s: %s",
        len(segments),
        params.problem.calendar.format(period),
        ", ".join(segments[:10]) + (" ..." if len(segments) > 10 else ""),
    )


def _append_live(ctx: Context, new: pd.DataFrame) -> pd.DataFrame:
    path = ctx.state.live
    old = pd.read_parquet(path) if path.is_file() else None
    live = new if old is None else pd.concat([old, new], ignore_index=True)
    live = live.drop_duplicates(
        subset=[ctx.params.problem.segment_column, "period"], keep="last"
    ).reset_index(drop=True)
    write_parquet(path, live)
    return live


def _wape(frame: pd.DataFrame, column: str) -> float | None:
    if not len(frame):
        return None
    value = scores(frame["actual"], frame[column])["wape"]
    return None if value is None else float(value)


def _monitors(
    ctx: Context, live: pd.DataFrame, table: pd.DataFrame, period: int, state: dict
) -> dict:
    """Live error against validation error and rule, per segment, and drift."""
    from ..monitoring.policy import Observation

    params, spec = ctx.params, ctx.params.backtest
    cal, seg = params.problem.calendar, params.problem.segment_column
    evaluation = read_json(ctx.root / params.paths.metric("evaluate"))
    validation = float(evaluation["model"]["wape"])
    lt = live["period"].map(cal.parse).to_numpy()
    window = live[lt > period - spec.error_window_periods]
    window_wape = _wape(window, "forecast")
    rule_wape = _wape(window, "rule_forecast")
    alarm = bool(window_wape is not None and window_wape > spec.error_factor * validation)
    seg_val = {
        str(r[seg]): float(r["wape"])
        for r in evaluation.get("per_segment", [])
        if seg in r and r.get("wape") is not None
    }
    by_seg = {str(k): g for k, g in window.groupby(seg, observed=True)}
    seg_window = {k: w for k, g in by_seg.items() if (w := _wape(g, "forecast")) is not None}
    seg_rule = {k: w for k, g in by_seg.items() if (w := _wape(g, "rule_forecast")) is not None}
    drift = _drift(ctx, live, table, period)
    current = live[lt == period]
    live_scores = scores(current["actual"], current["forecast"]) if len(current) else {}
    observation = Observation(
        period=period,
        since_retrain=period - state["last_retrain"],
        drifted=bool(drift.get("drifted")),
        error_alarm=alarm,
        window_wape=window_wape,
        rule_window_wape=rule_wape,
        validation_wape=validation,
        segment_window_wape=seg_window,
        segment_rule_window_wape=seg_rule,
        segment_validation_wape=seg_val,
        routed_segments=frozenset(_routed(ctx)),
        kept_in_a_row=int(state.get("kept_in_a_row", 0)),
        segment_since_refit={
            name: period - cal.parse(when) for name, when in state.get("segment_refits", {}).items()
        },
    )
    summary = {
        "n": int(len(current)),
        "mae": live_scores.get("mae"),
        "wape": live_scores.get("wape"),
        "rule_mae": scores(current["actual"], current["rule_forecast"])["mae"]
        if len(current)
        else None,
        "window_periods": spec.error_window_periods,
        "window_wape": window_wape,
        "rule_window_wape": rule_wape,
        "validation_wape": validation,
        "error_alarm": alarm,
        "segments_losing_to_rule": sorted(
            k for k, w in seg_window.items() if k in seg_rule and seg_rule[k] < w
        ),
    }
    logger.info(
        "monitors: live WAPE %.4f over the last %s (validation %.4f, alarm above %.4f), rule "
        "%s; drift %s",
        window_wape if window_wape is not None else float("nan"),
        cal.count(spec.error_window_periods),
        validation,
        spec.error_factor * validation,
        f"{rule_wape:.4f}" if rule_wape is not None else "-",
        "detected" if drift.get("drifted") else "not detected",
    )
    return {"observation": observation, "live": summary, "drift": drift}


def _routed(ctx: Context) -> list[str]:
    path = ctx.root / ctx.params.paths.deployed_segments / "manifest.json"
    if not path.is_file():
        return []
    manifest = read_json(path)
    return [
        str(e["segment"])
        for e in manifest.get("models", [])
        if isinstance(e, dict) and is_statistical(str(e.get("family", "global")))
    ]


def _drift(ctx: Context, live: pd.DataFrame, table: pd.DataFrame, period: int) -> dict:
    """Drift of the latest ``backtest.drift_window_periods`` (inputs, target and the live
    forecasts) against the deployed training reference."""
    from ..modelling.features import build_features
    from ..monitoring.drift import compare
    from ..monitoring.reference import drift_thresholds, monitored_frame

    params = ctx.params
    reference_path = ctx.root / params.paths.reference
    metadata_path = ctx.root / params.paths.model_metadata
    if not reference_path.is_file() or not metadata_path.is_file():
        return {"drifted": False, "checked": False, "reason": "no training reference"}
    cal, seg = params.problem.calendar, params.problem.segment_column
    start = period - params.backtest.drift_window_periods + 1
    features, _ = build_features(table, params.problem, params.features, params.windows)
    current = features[features[T].between(start, period)].reset_index(drop=True)
    lt = live["period"].map(cal.parse)
    key = pd.DataFrame({seg: live[seg].astype(str), T: lt, "p": live["forecast"]})
    joined = current[[seg, T]].astype({seg: str}).merge(key, on=[seg, T], how="left")
    columns = list(read_json(metadata_path)["features"])
    frame, _, _ = monitored_frame(current, columns, joined["p"].to_numpy(dtype=float))
    report = compare(read_json(reference_path), frame, drift_thresholds(params.drift))
    drifted_columns = [c for c, v in report["columns"].items() if v.get("drifted")]
    return {
        "checked": True,
        "window": {"start": cal.format(start), "end": cal.format(period)},
        "drifted": bool(report["drifted"]),
        "share_drifted": report.get("share_drifted"),
        "columns": drifted_columns,
    }


def _retrain(ctx: Context, live: pd.DataFrame, period: int, champion_version: str) -> dict:
    """Run the challenger as a DVC experiment; promote it (``dvc exp apply``) if it wins."""
    params, root = ctx.params, ctx.root
    cal, spec = params.problem.calendar, params.backtest
    v = spec.validation_periods
    windows = {
        "windows.train_end": cal.format(period - v),
        "windows.test_start": cal.format(period - v + 1),
        "windows.test_end": cal.format(period),
        "drift.current_start": cal.format(period - v + 1),
        "drift.current_end": cal.format(period),
    }
    head = _git(root, "rev-parse", "--short=8", "HEAD").stdout.strip()
    name = f"{params.cycle.experiment_prefix}-{cal.format(period)}-{head}"
    _dvc(root, "exp", "remove", name)  # a killed cycle's experiment of the same name
    sets = [arg for key, value in windows.items() for arg in ("-S", f"{key}={value}")]
    started = time.perf_counter()
    proc = _dvc(
        root, "exp", "run", "--temp", "-n", name, *sets, timeout=params.cycle.retrain_timeout_s
    )
    _checked(proc, f"dvc exp run {name}")
    evaluation = json.loads(_exp_file(root, name, params.paths.metric("evaluate")))
    lt = live["period"].map(cal.parse)
    seen = live[(lt > period - v) & (lt <= period)]
    champion = _wape(seen, "forecast")
    challenger = float(evaluation["model"]["wape"])
    gate_passed = bool(evaluation["gate_passed"])
    better = champion is None or challenger < champion
    promoted = better and (gate_passed or not spec.gate)
    why = (
        f"challenger WAPE {challenger:.4f} on {windows['windows.test_start']}.."
        f"{windows['windows.test_end']} vs the deployed model's live WAPE "
        + (f"{champion:.4f}" if champion is not None else "(none)")
        + (f"; evaluation gate {'passed' if gate_passed else 'failed'}" if spec.gate else "")
    )
    if promoted:
        with ctx.step("promote"):
            _checked(_dvc(root, "exp", "apply", name), f"dvc exp apply {name}")
        logger.info("experiment %s promoted: %s", name, why)
    else:
        logger.warning("experiment %s not promoted (the deployed model stays): %s", name, why)
    return {
        "experiment": name,
        "windows": windows,
        "challenger_wape": challenger,
        "champion_wape": champion,
        "gate_passed": gate_passed,
        "gate_failures": list(evaluation.get("gate_failures", [])),
        "promoted": promoted,
        "why": why,
        "seconds": round(time.perf_counter() - started, 1),
        "model_before": champion_version,
    }


def _exp_file(root: Path, name: str, path: str) -> str:
    """A file of experiment ``name`` (its git ref), without touching the workspace."""
    refs = _checked(_git(root, "for-each-ref", "--format=%(refname)", "refs/exps"), "git refs")
    matches = [r for r in refs.split() if r.rsplit("/", 1)[-1] == name]
    if not matches:
        raise CycleStepError(f"experiment {name!r}: no git ref under refs/exps after its run.")
    return _checked(_git(root, "show", f"{matches[-1]}:{path}"), f"git show {name}:{path}")


def _reload_params(ctx: Context) -> Params:
    from ..core.config import load_params

    params = load_params(ctx.root / "params.yaml")
    ctx.params = params
    return params


def _next_forecasts(
    ctx: Context, deployed: Any, table: pd.DataFrame, t: np.ndarray, period: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The deployed model's forecasts of the period after ``period``, and its history."""
    from ..serving.forecaster import merge_history

    params = ctx.params
    seg = params.problem.segment_column
    last_state = int(period_of(deployed.state, params.problem).max())
    rows = _source_rows(ctx, table, t, last_state, period)
    if seg in rows.columns:
        rows = rows[rows[seg].astype(str).isin(deployed.segment_set)]
    out = deployed.forecast(rows, segments=list(deployed.segments), checked=True)
    history = merge_history(deployed.state, rows, params) if len(rows) else deployed.state
    keep = params.features.history_length
    ht = period_of(history, params.problem)
    history = history[ht > period - keep].reset_index(drop=True)
    return out.reset_index(drop=True), history


def _finish(ctx: Context, state: dict, audit: dict, status: str = "processed") -> Outcome:
    """Write the state and the audit line, the report, and commit; then push and reload."""
    cal = ctx.params.problem.calendar
    saved = {
        **state,
        "last_period": cal.format(state["last_period"]),
        "last_retrain": cal.format(state["last_retrain"]),
    }
    write_json(ctx.state.state, saved)
    audit = {**audit, "durations_s": dict(ctx.timings)}
    line = json.dumps(json.loads(dumps_json(audit)), separators=(", ", ": "))
    with open(ctx.state.audit, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    with ctx.step("report"):
        _report(ctx)
    with ctx.step("commit"):
        commit = _commit(ctx, audit)
    audit["commit"] = commit
    pushed = None
    if commit:
        with ctx.step("push"):
            pushed = _push(ctx)
    with ctx.step("reload"):
        _reload_service(ctx)
    logger.info(
        "cycle %s: %s (%s)%s; %s",
        audit.get("period"),
        audit.get("decision"),
        audit.get("reason"),
        f", commit {commit[:10]}" if commit else "",
        ", ".join(f"{k} {v:.1f} s" for k, v in ctx.timings.items()),
    )
    if pushed is False:
        return Outcome(status, audit, exit_code=1)
    return Outcome(status, audit)


def _report(ctx: Context) -> None:
    dvc_yaml = (ctx.root / "dvc.yaml").read_text()
    if "\n  report:" not in dvc_yaml:
        return
    _checked(_dvc(ctx.root, "repro", "--single-item", "report"), "dvc repro report")


def _commit(ctx: Context, audit: dict) -> str | None:
    root = ctx.root
    owned = [p for p in _owned_paths(ctx.params) if (root / p).exists()]
    _checked(_git(root, "add", "--", *owned), "git add")
    staged = _git(root, "diff", "--cached", "--quiet", "--", *owned)
    if staged.returncode == 0:
        (root / INFLIGHT_FILE).unlink(missing_ok=True)
        return None
    retrain = audit.get("retrain") or {}
    title = f"cycle {audit.get('period') or '(refused)'}: {audit['decision']}"
    if retrain:
        title += f", {'promoted' if retrain.get('promoted') else 'not promoted'} " + str(
            retrain.get("experiment")
        )
    body = (
        f"{audit.get('reason', '')}\n\n"
        f"Cycle-Period: {audit.get('period')}\n"
        f"Cycle-Decision: {audit['decision']}\n"
        f"Cycle-Promoted: {'yes' if retrain.get('promoted') else 'no'}\n"
        f"Model-Before: {audit.get('model_before')}\nModel-After: {audit.get('model_after')}\n"
    )
    env_args = [
        "-c",
        "user.name=panelcast cycle",
        "-c",
        "user.email=cycle@panelcast.invalid",
    ]
    has_identity = _git(root, "config", "user.email").stdout.strip()
    args = ([] if has_identity else env_args) + ["commit", "-q", "-m", title, "-m", body]
    _checked(_git(root, *args, "--", *owned), "git commit")
    (root / INFLIGHT_FILE).unlink(missing_ok=True)  # the commit point is passed
    return _git(root, "rev-parse", "HEAD").stdout.strip()


def _unpushed_cycle(root: Path) -> bool:
    """Whether HEAD is a cycle's commit whose artefacts were not pushed (a cycle killed or
    a remote down between its commit and its push)."""
    message = _git(root, "log", "-1", "--format=%B").stdout
    if "Cycle-Period:" not in message:
        return False
    head = _git(root, "rev-parse", "HEAD").stdout.strip()
    marker = root / PUSHED_FILE
    return not (marker.is_file() and marker.read_text().strip() == head)


def _push(ctx: Context) -> bool | None:
    """``dvc push`` when enabled and a remote is configured; None when not attempted."""
    if not ctx.params.cycle.push or not has_remote(ctx.root):
        return None
    proc = _dvc(ctx.root, "push", "--quiet")
    if proc.returncode != 0:
        logger.error("dvc push failed (the next cycle retries): %s", proc.stderr.strip()[-500:])
        return False
    head = _git(ctx.root, "rev-parse", "HEAD").stdout.strip()
    atomic_write(ctx.root / PUSHED_FILE, lambda tmp: tmp.write_text(head + "\n"))
    return True


def has_remote(root: Path) -> bool:
    """Whether the repository's DVC config (``.dvc/config``, ``config.local``) names a
    default remote (read directly: a ``dvc remote list`` costs seconds of start-up)."""
    import configparser

    for name in ("config", "config.local"):
        parser = configparser.ConfigParser()
        try:
            parser.read(root / ".dvc" / name)
        except configparser.Error:
            return True  # unreadable here: let dvc decide
        if parser.has_option("core", "remote"):
            return True
    return False


def _reload_service(ctx: Context) -> None:
    url = ctx.params.cycle.service_url
    if not url:
        return
    request = urllib.request.Request(url.rstrip("/") + "/admin/reload", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (params URL)
            body = json.loads(response.read() or b"{}")
        logger.info("service %s: %s", url, body)
    except Exception as exc:  # the service reloads by itself when it sees the files change
        logger.warning("service %s did not answer the reload (%s)", url, exc)
