"""Production replayed on history: deploy, forecast, observe, monitor, retrain, redeploy.

Each period the deployed model (the champion) forecasts the period; once its values are
known the error is recorded and the policy decides whether to retrain. A retrain fits
a challenger on the expanding window up to ``validation_periods`` before now and
compares it with the champion's *live* error on those periods; it is promoted (refit on
everything known) only when it is better. Every policy replays the same periods on the
same data, so their errors and costs (number of fits) compare directly. Periods are
those of ``problem.time`` (months in the default case), counted by a
:class:`~panelcast.core.periods.Calendar`.

What the replay computes is shared across policies instead of recomputed by each: a fit
depends only on its training cutoff (the expanding window always starts at
``first_train_start``, the seed is fixed and thread pools are pinned), so
:class:`BacktestData` fits each cutoff once and memoises, per cutoff, the model, its
validation error and its drift profile, the model's predictions period by period (each
period predicted once per model) and the drift check of each period against the model's
profile. Policies are then replayed one after the other in one process; with
``n_jobs > 1`` the cutoffs known before the replay (the first deployment and every
challenger of the ``every`` policies) are fitted first in that many processes.
A policy's ``fits`` stays what it would cost in production; :attr:`BacktestData.fitted`
counts what the backtest really fitted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, parallel_config
from threadpoolctl import threadpool_limits

from ..core.config import BacktestSpec, NamedPeriod, PolicySpec, TrainSpec
from ..core.periods import LEVEL_FEATURE, PREDICTION, TARGET, Calendar, T
from ..core.progress import Progress
from ..modelling.metrics import scores
from ..modelling.model import fit_model
from .drift import DriftThresholds, build_profile, compare
from .reference import monitored_frame, steady_state

logger = logging.getLogger(__name__)

#: Periods predicted in one call after a period a model had not predicted yet.
PREDICT_AHEAD = 12

#: The keys of each replayed period's record, in order.
RECORD_COLUMNS = (
    "period",
    "policy",
    "n",
    "mae",
    "wape",
    "drifted",
    "share_drifted",
    "abs_error",
    "actual",
    "max_effect",
    "error_alarm",
    "retrain",
    "model_trained_until",
)


@dataclass
class Deployed:
    """The champion: model, its drift reference and its validation error."""

    model: Any
    profile: dict
    val_wape: float
    trained_until: int


@dataclass
class Replay:
    """What one policy did, period by period."""

    policy: str
    periods: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    fits: int = 0


@dataclass
class BacktestData:
    """Data and settings shared by all policies of one replay, and what they share.

    Everything derived from a model is memoised by the model's training cutoff (the last
    period of its expanding window): :meth:`model`, :meth:`validation_wape`,
    :meth:`deployed`, :meth:`predict` (per period) and :meth:`drift` (per period).
    ``calendar`` reads the periods of ``spec`` (``problem.calendar``).
    """

    frame: pd.DataFrame
    cols: list[str]
    segment: str
    warmup: int
    spec: BacktestSpec
    train: TrainSpec
    scale: str
    thresholds: DriftThresholds
    calendar: Calendar
    threads: int = 1  # thread pools of every fit and prediction (1: same bytes on any machine)

    def __post_init__(self) -> None:
        self.start = self.calendar.parse(self.spec.first_train_start)
        self._t = self.frame[T].to_numpy()
        self._known = self.frame[TARGET].notna().to_numpy()
        self._models: dict[int, Any] = {}
        self._wape: dict[int, float] = {}
        self._deployed: dict[int, Deployed] = {}
        # per cutoff: the model's prediction of every row of the frame (NaN until its
        # period is predicted) and the periods predicted so far
        self._pred: dict[int, np.ndarray] = {}
        self._pred_periods: dict[int, set[int]] = {}
        self._drift: dict[tuple[int, int], dict] = {}
        self._present = set(np.unique(self._t).tolist())
        self._fit_opts = (self.scale, LEVEL_FEATURE, self.threads)  # fit_model's last arguments
        # per period: the rows of its drift window and their monitored frame
        self._windows: dict[int, tuple[np.ndarray, pd.DataFrame]] = {}

    @property
    def fitted(self) -> int:
        """Distinct models fitted so far (one per training cutoff)."""
        return len(self._models)

    # ----------------------------------------------------------------- rows, by position

    def positions(self, first: int, last: int, known: bool = False) -> np.ndarray:
        """Positions (in frame order) of the rows of periods ``first..last``."""
        mask = (self._t >= first) & (self._t <= last)
        return np.flatnonzero(mask & self._known if known else mask)

    def _training_rows(self, until: int) -> pd.DataFrame:
        return self.frame.iloc[self.positions(self.start, until, known=True)]

    # ----------------------------------------------------------------- memoised by cutoff

    def model(self, until: int) -> Any:
        """The model fitted on the known rows from ``first_train_start`` to ``until``."""
        if until not in self._models:
            args = _fit_args(self._training_rows(until), self.cols)
            self._models[until], _ = fit_model(*args, self.train, *self._fit_opts)
        return self._models[until]

    def prefit(self, cutoffs: set[int], n_jobs: int) -> None:
        """Fit the cutoffs not fitted yet in ``n_jobs`` processes (each pinned to ``threads``)."""
        todo = sorted(c for c in cutoffs if c not in self._models)
        if not todo:
            return
        logger.info(
            "backtest: fitting %d cutoff(s) known in advance in %d process(es)", len(todo), n_jobs
        )
        progress = Progress("backtest fits", len(todo), "models", log=logger)
        # the workers run fit_model itself, so they import only panelcast.modelling.model
        fit = delayed(fit_model)
        with parallel_config(backend="loky", inner_max_num_threads=self.threads):
            done = Parallel(n_jobs=n_jobs, return_as="generator")(
                fit(*_fit_args(self._training_rows(c), self.cols), self.train, *self._fit_opts)
                for c in todo
            )
            for k, (cut, (model, _)) in enumerate(zip(todo, done, strict=True), start=1):
                self._models[cut] = model
                progress.update(k)

    def predict(self, until: int, pos: np.ndarray) -> np.ndarray:
        """Predictions of :meth:`model` ``(until)`` for the rows at ``pos``.

        Each period is predicted once per model (a row's prediction does not depend on the
        other rows predicted with it), then served from the cache; a period not predicted
        yet is predicted together with the ``PREDICT_AHEAD`` periods after it.
        """
        done = self._pred_periods.setdefault(until, set())
        missing = [m for m in np.unique(self._t[pos]).tolist() if m not in done]
        if missing:
            # a champion is asked for one new period at a time: predict the periods after it
            # in the same call (one call per period would cost ~10 ms each in overhead)
            ahead = range(missing[-1] + 1, missing[-1] + 1 + PREDICT_AHEAD)
            missing += [m for m in ahead if m in self._present and m not in done]
            cache = self._pred.setdefault(until, np.full(len(self.frame), np.nan))
            new = np.flatnonzero(np.isin(self._t, missing))
            cache[new] = self.model(until).predict(self.frame.iloc[new][self.cols])
            done.update(missing)
        return self._pred[until][pos]

    def validation_wape(self, until: int) -> float:
        """WAPE of a model fitted up to ``until - validation_periods`` on the periods after it."""
        if until not in self._wape:
            cut = until - self.spec.validation_periods
            pos = self.positions(cut + 1, until, known=True)
            wape = scores(self.frame[TARGET].to_numpy()[pos], self.predict(cut, pos))["wape"]
            self._wape[until] = float(wape)
        return self._wape[until]

    def deployed(self, until: int) -> Deployed:
        """The model of cutoff ``until`` as a champion: its drift profile and validation WAPE."""
        if until not in self._deployed:
            pos = self.positions(self.start, until, known=True)
            rows = self.frame.iloc[pos]
            pred = self.predict(until, pos)
            steady = steady_state(rows, self.segment, self.warmup).to_numpy()
            mon, num, cat = monitored_frame(rows[steady], self.cols, pred[steady])
            self._deployed[until] = Deployed(
                self.model(until),
                build_profile(mon, num, cat),
                self.validation_wape(until),
                until,
            )
        return self._deployed[until]

    def drift(self, until: int, period: int) -> dict:
        """Drift of the latest ``drift_window_periods`` up to ``period`` against the profile
        of the model of cutoff ``until`` (its predictions included)."""
        key = (until, period)
        if key not in self._drift:
            if period not in self._windows:
                # the monitored window without the model's part, shared by every model:
                # monitored_frame's prediction column holds the predictions, as floats
                pos = self.positions(period - self.spec.drift_window_periods + 1, period)
                mon, _, _ = monitored_frame(self.frame.iloc[pos], self.cols, np.zeros(len(pos)))
                self._windows[period] = pos, mon
            pos, mon = self._windows[period]
            mon = mon.assign(**{PREDICTION: self.predict(until, pos)})
            report = compare(self.deployed(until).profile, mon, self.thresholds)
            effects = [c["effect"] for c in report["columns"].values() if c["effect"] is not None]
            self._drift[key] = {
                "drifted": bool(report["drifted"]),
                "share_drifted": report["share_drifted"],
                "max_effect": max(effects) if effects else None,
            }
        return self._drift[key]


def _fit_args(rows: pd.DataFrame, cols: list[str]) -> tuple:
    """Features, target and periods of ``rows``: the data arguments of ``fit_model``."""
    return rows[cols], rows[TARGET], rows[T].to_numpy()


# --------------------------------------------------------------------------- the replay


def replayed_periods(ctx: BacktestData) -> list[int]:
    """The replayed periods: from after the first training window to the end, with rows."""
    cal = ctx.calendar
    first_end, end = cal.parse(ctx.spec.first_train_end), cal.parse(ctx.spec.end)
    return [p for p in range(first_end + 1, end + 1) if p in ctx._present]


def _every_due(policy: PolicySpec, period: int, last_retrain: int) -> bool:
    return period - last_retrain >= policy.every_periods


def known_cutoffs(ctx: BacktestData) -> set[int]:
    """Cutoffs every replay needs whatever the data say: the first deployment with its
    validation model, and the challenger of every retrain of the ``every`` policies
    (their schedule does not depend on the errors)."""
    spec = ctx.spec
    first_end = ctx.calendar.parse(spec.first_train_end)
    cuts = {first_end, first_end - spec.validation_periods}
    for policy in spec.policies:
        if policy.kind != "every":
            continue
        last = first_end
        for period in replayed_periods(ctx):
            if _every_due(policy, period, last):
                cuts.add(period - spec.validation_periods)
                last = period
    return cuts


def _replay(ctx: BacktestData, policy: PolicySpec, progress: Progress, done: int) -> Replay:
    spec, cal = ctx.spec, ctx.calendar
    first_end = cal.parse(spec.first_train_end)
    out = Replay(policy.name)
    champion = ctx.deployed(first_end)
    out.fits += 2
    last_retrain = first_end
    live = []  # champion's live forecasts of every period so far
    periods = replayed_periods(ctx)
    for k, period in enumerate(periods, start=1):
        pos = ctx.positions(period, period)
        rows = ctx.frame.iloc[pos]
        frame = rows[[ctx.segment, T, TARGET]].assign(
            prediction=ctx.predict(champion.trained_until, pos)
        )
        live.append(frame)
        scored = frame[frame[TARGET].notna()]
        record = {
            "period": cal.format(period),
            "policy": policy.name,
            "n": int(len(scored)),
            "mae": None,
            "wape": None,
            "drifted": False,
            "share_drifted": None,
            "abs_error": 0.0,
            "actual": 0.0,
            "max_effect": None,
            "error_alarm": False,
            "retrain": "",
            "model_trained_until": cal.format(champion.trained_until),
        }
        if len(scored):
            s = scores(scored[TARGET], scored["prediction"])
            record["mae"], record["wape"] = s["mae"], s["wape"]
            record["abs_error"] = float((scored["prediction"] - scored[TARGET]).abs().sum())
            record["actual"] = float(scored[TARGET].abs().sum())
        # the period is now known: monitor, then decide
        history = pd.concat(live[-spec.drift_window_periods :], ignore_index=True)
        record.update(ctx.drift(champion.trained_until, period))
        recent = history[history[T] > period - spec.error_window_periods]
        recent = recent[recent[TARGET].notna()]
        if len(recent):
            wape = scores(recent[TARGET], recent["prediction"])["wape"]
            record["error_alarm"] = bool(
                wape is not None and wape > spec.error_factor * champion.val_wape
            )
        due = period - last_retrain >= max(spec.min_periods_between, 1)
        if policy.kind == "every":
            retrain = _every_due(policy, period, last_retrain)
        elif policy.kind == "on_alarm":
            retrain = due and (record["drifted"] or record["error_alarm"])
        else:
            retrain = False
        if retrain:
            champion, promoted = _challenge(ctx, champion, live, period)
            out.fits += 2 if promoted else 1
            last_retrain = period
            record["retrain"] = "promoted" if promoted else "kept"
            reason = ("drift" if record["drifted"] else "") + (
                "+error" if record["error_alarm"] else ""
            )
            out.events.append(
                {
                    "period": cal.format(period),
                    "promoted": promoted,
                    "trigger": reason.strip("+") or policy.kind,
                }
            )
        out.periods.append(record)
        progress.update(
            done + k,
            f"policy {policy.name}: {k}/{cal.count(len(periods))}, up to {cal.format(period)}, "
            f"{len(out.events)} retrain(s), {ctx.fitted} distinct fit(s)",
        )
    return out


def _challenge(
    ctx: BacktestData, champion: Deployed, live: list[pd.DataFrame], period: int
) -> tuple[Deployed, bool]:
    """Fit a challenger up to ``period - validation_periods``; promote it if better live."""
    cut = period - ctx.spec.validation_periods
    chall = ctx.validation_wape(period)  # the challenger's WAPE on the periods after ``cut``
    seen = pd.concat(live, ignore_index=True)
    seen = seen[seen[T].between(cut + 1, period) & seen[TARGET].notna()]
    champ = scores(seen[TARGET], seen["prediction"])["wape"]
    if chall < champ:
        return ctx.deployed(period), True
    return champion, False


def run_backtest(ctx: BacktestData) -> list[Replay]:
    """Replay every policy on the same data and periods, sharing fits, predictions and
    drift checks (see the module docstring); ``ctx.fitted`` then holds the distinct fits."""
    spec, cal = ctx.spec, ctx.calendar
    periods = replayed_periods(ctx)
    logger.info(
        "backtest: %d policies x %s from %s to %s, %d process(es) for the known fits",
        len(spec.policies),
        cal.count(len(periods)),
        spec.first_train_end,
        spec.end,
        spec.n_jobs,
    )
    started = time.perf_counter()
    if spec.n_jobs > 1:  # one process fits lazily on demand: nothing to prefetch
        ctx.prefit(known_cutoffs(ctx), spec.n_jobs)
    progress = Progress(
        "backtest", len(spec.policies) * len(periods), f"policy-{cal.unit}s", log=logger
    )
    replays = []
    with threadpool_limits(limits=ctx.threads):
        for policy in spec.policies:
            replays.append(_replay(ctx, policy, progress, len(replays) * len(periods)))
    logger.info(
        "backtest: %d distinct fits for %d policies in %.0f s",
        ctx.fitted,
        len(spec.policies),
        time.perf_counter() - started,
    )
    return replays


def summarise(
    replays: list[Replay], calendar: Calendar, named_periods: Sequence[NamedPeriod] = ()
) -> dict:
    """Per policy: error overall and in each named period (``<name>_mae``, ``_wape``,
    ``_n``), number of retrains and fits, the periods that drifted or raised the error alarm."""
    out = {}
    for r in replays:
        periods = pd.DataFrame(r.periods, columns=list(RECORD_COLUMNS))
        t = periods["period"].map(calendar.parse)
        named = {}
        for named_period in named_periods:
            start, end = calendar.parse(named_period.start), calendar.parse(named_period.end)
            named |= _pooled(periods[(t >= start) & (t <= end)], f"{named_period.name}_")
        out[r.policy] = {
            **_pooled(periods, ""),
            **named,
            "retrains": len(r.events),
            "promotions": sum(e["promoted"] for e in r.events),
            "fits": r.fits,
            "drift_periods": periods.loc[periods["drifted"].astype(bool), "period"].tolist(),
            "error_alarm_periods": periods.loc[
                periods["error_alarm"].astype(bool), "period"
            ].tolist(),
            "events": r.events,
        }
    return out


def _pooled(periods: pd.DataFrame, prefix: str) -> dict[str, float | None]:
    """MAE and WAPE pooled over all scored segment-periods of ``periods``."""
    n, err, actual = periods["n"].sum(), periods["abs_error"].sum(), periods["actual"].sum()
    return {
        f"{prefix}mae": round(float(err / n), 4) if n else None,
        f"{prefix}wape": round(float(err / actual), 6) if actual else None,
        f"{prefix}n": int(n),
    }
