"""Production replayed on history: deploy, forecast, observe, monitor, retrain, redeploy.

Each month the deployed model (the champion) forecasts the month; once its values are
known the error is recorded and the policy decides whether to retrain. A retrain fits
a challenger on the expanding window up to ``validation_months`` before now and
compares it with the champion's *live* error on those months; it is promoted (refit on
everything known) only when it is better. Every policy replays the same months on the
same data, so their errors and costs (number of fits) compare directly.

What the replay computes is shared across policies instead of recomputed by each: a fit
depends only on its training cutoff (the expanding window always starts at
``first_train_start``, the seed is fixed and thread pools are pinned), so
:class:`BacktestData` fits each cutoff once and memoises, per cutoff, the model, its
validation error and its drift profile, the model's predictions month by month (each
month predicted once per model) and the drift check of each month against the model's
profile. Policies are then replayed one after the other in one process; with
``n_jobs > 1`` the cutoffs known before the replay (the first deployment and every
challenger of the ``every`` policies) are fitted first in that many processes.
A policy's ``fits`` stays what it would cost in production; :attr:`BacktestData.fitted`
counts what the backtest really fitted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, parallel_config
from threadpoolctl import threadpool_limits

from ..core.config import BacktestSpec, PolicySpec, TrainSpec
from ..core.periods import LEVEL_FEATURE, PREDICTION, TARGET, T, format_period, parse_period
from ..core.progress import Progress
from ..modelling.metrics import scores
from ..modelling.model import fit_model
from .drift import DriftThresholds, build_profile, compare
from .reference import monitored_frame, steady_state

logger = logging.getLogger(__name__)

#: Months predicted in one call after a month a model had not predicted yet.
PREDICT_AHEAD = 12


@dataclass
class Deployed:
    """The champion: model, its drift reference and its validation error."""

    model: Any
    profile: dict
    val_wape: float
    trained_until: int


@dataclass
class Replay:
    """What one policy did, month by month."""

    policy: str
    months: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    fits: int = 0


@dataclass
class BacktestData:
    """Data and settings shared by all policies of one replay, and what they share.

    Everything derived from a model is memoised by the model's training cutoff (the last
    month of its expanding window): :meth:`model`, :meth:`validation_wape`,
    :meth:`deployed`, :meth:`predict` (per month) and :meth:`drift` (per month).
    """

    frame: pd.DataFrame
    cols: list[str]
    segment: str
    warmup: int
    spec: BacktestSpec
    train: TrainSpec
    scale: str
    thresholds: DriftThresholds
    threads: int = 1  # thread pools of every fit and prediction (1: same bytes on any machine)

    def __post_init__(self) -> None:
        self.start = parse_period(self.spec.first_train_start)
        self._t = self.frame[T].to_numpy()
        self._known = self.frame[TARGET].notna().to_numpy()
        self._models: dict[int, Any] = {}
        self._wape: dict[int, float] = {}
        self._deployed: dict[int, Deployed] = {}
        # per cutoff: the model's prediction of every row of the frame (NaN until its
        # month is predicted) and the months predicted so far
        self._pred: dict[int, np.ndarray] = {}
        self._pred_months: dict[int, set[int]] = {}
        self._drift: dict[tuple[int, int], dict] = {}
        self._present = set(np.unique(self._t).tolist())
        self._fit_opts = (self.scale, LEVEL_FEATURE, self.threads)  # fit_model's last arguments
        # per month: the rows of its drift window and their monitored frame
        self._windows: dict[int, tuple[np.ndarray, pd.DataFrame]] = {}

    @property
    def fitted(self) -> int:
        """Distinct models fitted so far (one per training cutoff)."""
        return len(self._models)

    # ----------------------------------------------------------------- rows, by position

    def positions(self, first: int, last: int, known: bool = False) -> np.ndarray:
        """Positions (in frame order) of the rows of months ``first..last``."""
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

        Each month is predicted once per model (a row's prediction does not depend on the
        other rows predicted with it), then served from the cache; a month not predicted
        yet is predicted together with the ``PREDICT_AHEAD`` months after it.
        """
        done = self._pred_months.setdefault(until, set())
        missing = [m for m in np.unique(self._t[pos]).tolist() if m not in done]
        if missing:
            # a champion is asked for one new month at a time: predict the months after it
            # in the same call (one call per month would cost ~10 ms each in overhead)
            ahead = range(missing[-1] + 1, missing[-1] + 1 + PREDICT_AHEAD)
            missing += [m for m in ahead if m in self._present and m not in done]
            cache = self._pred.setdefault(until, np.full(len(self.frame), np.nan))
            new = np.flatnonzero(np.isin(self._t, missing))
            cache[new] = self.model(until).predict(self.frame.iloc[new][self.cols])
            done.update(missing)
        return self._pred[until][pos]

    def validation_wape(self, until: int) -> float:
        """WAPE of a model fitted up to ``until - validation_months`` on the months after it."""
        if until not in self._wape:
            cut = until - self.spec.validation_months
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

    def drift(self, until: int, month: int) -> dict:
        """Drift of the latest ``drift_window_months`` up to ``month`` against the profile
        of the model of cutoff ``until`` (its predictions included)."""
        key = (until, month)
        if key not in self._drift:
            if month not in self._windows:
                # the monitored window without the model's part, shared by every model:
                # monitored_frame's prediction column holds the predictions, as floats
                pos = self.positions(month - self.spec.drift_window_months + 1, month)
                mon, _, _ = monitored_frame(self.frame.iloc[pos], self.cols, np.zeros(len(pos)))
                self._windows[month] = pos, mon
            pos, mon = self._windows[month]
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
    """Features, target and months of ``rows``: the data arguments of ``fit_model``."""
    return rows[cols], rows[TARGET], rows[T].to_numpy()


# --------------------------------------------------------------------------- the replay


def _months(ctx: BacktestData) -> list[int]:
    """The replayed months: from after the first training window to the end, with rows."""
    first_end, end = parse_period(ctx.spec.first_train_end), parse_period(ctx.spec.end)
    return [m for m in range(first_end + 1, end + 1) if m in ctx._present]


def _every_due(policy: PolicySpec, month: int, last_retrain: int) -> bool:
    return month - last_retrain >= policy.every_months


def known_cutoffs(ctx: BacktestData) -> set[int]:
    """Cutoffs every replay needs whatever the data say: the first deployment with its
    validation model, and the challenger of every retrain of the ``every`` policies
    (their schedule does not depend on the errors)."""
    spec = ctx.spec
    first_end = parse_period(spec.first_train_end)
    cuts = {first_end, first_end - spec.validation_months}
    for policy in spec.policies:
        if policy.kind != "every":
            continue
        last = first_end
        for month in _months(ctx):
            if _every_due(policy, month, last):
                cuts.add(month - spec.validation_months)
                last = month
    return cuts


def _replay(ctx: BacktestData, policy: PolicySpec, progress: Progress, done: int) -> Replay:
    spec = ctx.spec
    first_end = parse_period(spec.first_train_end)
    out = Replay(policy.name)
    champion = ctx.deployed(first_end)
    out.fits += 2
    last_retrain = first_end
    live = []  # champion's live forecasts of every month so far
    months = _months(ctx)
    for k, month in enumerate(months, start=1):
        pos = ctx.positions(month, month)
        rows = ctx.frame.iloc[pos]
        frame = rows[[ctx.segment, T, TARGET]].assign(
            prediction=ctx.predict(champion.trained_until, pos)
        )
        live.append(frame)
        scored = frame[frame[TARGET].notna()]
        record = {
            "month": format_period(month),
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
            "model_trained_until": format_period(champion.trained_until),
        }
        if len(scored):
            s = scores(scored[TARGET], scored["prediction"])
            record["mae"], record["wape"] = s["mae"], s["wape"]
            record["abs_error"] = float((scored["prediction"] - scored[TARGET]).abs().sum())
            record["actual"] = float(scored[TARGET].abs().sum())
        # the month is now known: monitor, then decide
        history = pd.concat(live[-spec.drift_window_months :], ignore_index=True)
        record.update(ctx.drift(champion.trained_until, month))
        recent = history[history[T] > month - spec.error_window_months]
        recent = recent[recent[TARGET].notna()]
        if len(recent):
            wape = scores(recent[TARGET], recent["prediction"])["wape"]
            record["error_alarm"] = bool(
                wape is not None and wape > spec.error_factor * champion.val_wape
            )
        due = month - last_retrain >= max(spec.min_months_between, 1)
        if policy.kind == "every":
            retrain = _every_due(policy, month, last_retrain)
        elif policy.kind == "on_alarm":
            retrain = due and (record["drifted"] or record["error_alarm"])
        else:
            retrain = False
        if retrain:
            champion, promoted = _challenge(ctx, champion, live, month)
            out.fits += 2 if promoted else 1
            last_retrain = month
            record["retrain"] = "promoted" if promoted else "kept"
            reason = ("drift" if record["drifted"] else "") + (
                "+error" if record["error_alarm"] else ""
            )
            out.events.append(
                {
                    "month": format_period(month),
                    "promoted": promoted,
                    "trigger": reason.strip("+") or policy.kind,
                }
            )
        out.months.append(record)
        progress.update(
            done + k,
            f"policy {policy.name}: {k}/{len(months)} months, up to {format_period(month)}, "
            f"{len(out.events)} retrain(s), {ctx.fitted} distinct fit(s)",
        )
    return out


def _challenge(
    ctx: BacktestData, champion: Deployed, live: list[pd.DataFrame], month: int
) -> tuple[Deployed, bool]:
    """Fit a challenger up to ``month - validation_months``; promote it if better live."""
    cut = month - ctx.spec.validation_months
    chall = ctx.validation_wape(month)  # the challenger's WAPE on the months after ``cut``
    seen = pd.concat(live, ignore_index=True)
    seen = seen[seen[T].between(cut + 1, month) & seen[TARGET].notna()]
    champ = scores(seen[TARGET], seen["prediction"])["wape"]
    if chall < champ:
        return ctx.deployed(month), True
    return champion, False


def run_backtest(ctx: BacktestData) -> list[Replay]:
    """Replay every policy on the same data and months, sharing fits, predictions and
    drift checks (see the module docstring); ``ctx.fitted`` then holds the distinct fits."""
    spec = ctx.spec
    months = _months(ctx)
    logger.info(
        "backtest: %d policies x %d months from %s to %s, %d process(es) for the known fits",
        len(spec.policies),
        len(months),
        spec.first_train_end,
        spec.end,
        spec.n_jobs,
    )
    started = time.perf_counter()
    if spec.n_jobs > 1:  # one process fits lazily on demand: nothing to prefetch
        ctx.prefit(known_cutoffs(ctx), spec.n_jobs)
    progress = Progress("backtest", len(spec.policies) * len(months), "policy-months", log=logger)
    replays = []
    with threadpool_limits(limits=ctx.threads):
        for policy in spec.policies:
            replays.append(_replay(ctx, policy, progress, len(replays) * len(months)))
    logger.info(
        "backtest: %d distinct fits for %d policies in %.0f s",
        ctx.fitted,
        len(spec.policies),
        time.perf_counter() - started,
    )
    return replays


def summarise(replays: list[Replay], spec: BacktestSpec) -> dict:
    """Per policy: error overall and in the crisis, number of retrains and fits, drift months."""
    cs, ce = parse_period(spec.crisis_start), parse_period(spec.crisis_end)
    out = {}
    for r in replays:
        months = pd.DataFrame(r.months)
        t = months["month"].map(parse_period)
        out[r.policy] = {
            **_pooled(months, ""),
            **_pooled(months[(t >= cs) & (t <= ce)], "crisis_"),
            "retrains": len(r.events),
            "promotions": sum(e["promoted"] for e in r.events),
            "fits": r.fits,
            "drift_months": months.loc[months["drifted"], "month"].tolist(),
            "error_alarm_months": months.loc[months["error_alarm"], "month"].tolist(),
            "events": r.events,
        }
    return out


def _pooled(months: pd.DataFrame, prefix: str) -> dict[str, float | None]:
    """MAE and WAPE pooled over all scored city-months of ``months``."""
    n, err, actual = months["n"].sum(), months["abs_error"].sum(), months["actual"].sum()
    return {
        f"{prefix}mae": round(float(err / n), 4) if n else None,
        f"{prefix}wape": round(float(err / actual), 6) if actual else None,
        f"{prefix}n": int(n),
    }
