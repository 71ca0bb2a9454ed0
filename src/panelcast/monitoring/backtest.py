"""Production replayed on history: deploy, forecast, observe, monitor, retrain, redeploy.

Each month the deployed model (the champion) forecasts the month; once its values are
known the error is recorded and the policy decides whether to retrain. A retrain fits
a challenger on the expanding window up to ``validation_months`` before now and
compares it with the champion's *live* error on those months; it is promoted (refit on
everything known) only when it is better. Every policy replays the same months on the
same data, so their errors and costs (number of fits) compare directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from ..core.config import BacktestSpec, PolicySpec, TrainSpec
from ..core.periods import LEVEL_FEATURE, TARGET, T, format_period, parse_period
from ..modelling.metrics import scores
from ..modelling.model import fit_model
from .drift import DriftThresholds, build_profile, compare
from .reference import monitored_frame, steady_state

logger = logging.getLogger(__name__)


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
    """Data and settings shared by all policies of one replay."""

    frame: pd.DataFrame
    cols: list[str]
    segment: str
    warmup: int
    spec: BacktestSpec
    train: TrainSpec
    scale: str
    thresholds: DriftThresholds

    def __post_init__(self) -> None:
        self.start = parse_period(self.spec.first_train_start)
        self.known = self.frame[self.frame[TARGET].notna()]

    def fit(self, until: int) -> Any:
        rows = self.known[self.known[T].between(self.start, until)]
        model, _ = fit_model(
            rows[self.cols], rows[TARGET], rows[T].to_numpy(), self.train, self.scale, LEVEL_FEATURE
        )
        return model, rows

    def deploy(self, until: int, val_wape: float) -> Deployed:
        model, rows = self.fit(until)
        steady = steady_state(rows, self.segment, self.warmup).to_numpy()
        pred = model.predict(rows[self.cols])
        mon, num, cat = monitored_frame(rows[steady], self.cols, pred[steady])
        return Deployed(model, build_profile(mon, num, cat), val_wape, until)

    def validation_wape(self, until: int) -> float:
        """WAPE of a model fitted up to ``until - validation_months`` on the months after it."""
        cut = until - self.spec.validation_months
        model, _ = self.fit(cut)
        val = self.known[self.known[T].between(cut + 1, until)]
        return float(scores(val[TARGET], model.predict(val[self.cols]))["wape"])


def replay_policy(ctx: BacktestData, policy: PolicySpec, log_level: int = logging.INFO) -> Replay:
    """Replay one policy over the whole backtest (runs in its own worker)."""
    if not logging.getLogger().handlers:  # a fresh worker process: report progress too
        logging.basicConfig(
            level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    with threadpool_limits(limits=1):
        return _replay(ctx, policy)


def _replay(ctx: BacktestData, policy: PolicySpec) -> Replay:
    spec = ctx.spec
    first_end = parse_period(spec.first_train_end)
    end = parse_period(spec.end)
    out = Replay(policy.name)
    champion = ctx.deploy(first_end, ctx.validation_wape(first_end))
    out.fits += 2
    last_retrain = first_end
    live = []  # champion's live forecasts of every month so far
    for month in range(first_end + 1, end + 1):
        rows = ctx.frame[ctx.frame[T] == month]
        if rows.empty:
            continue
        pred = champion.model.predict(rows[ctx.cols])
        frame = rows[[ctx.segment, T, TARGET]].assign(prediction=pred)
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
        window = ctx.frame[ctx.frame[T].between(month - spec.drift_window_months + 1, month)]
        mon, _, _ = monitored_frame(window, ctx.cols, champion.model.predict(window[ctx.cols]))
        report = compare(champion.profile, mon, ctx.thresholds)
        record["drifted"] = bool(report["drifted"])
        record["share_drifted"] = report["share_drifted"]
        effects = [c["effect"] for c in report["columns"].values() if c["effect"] is not None]
        record["max_effect"] = max(effects) if effects else None
        recent = history[history[T] > month - spec.error_window_months]
        recent = recent[recent[TARGET].notna()]
        if len(recent):
            wape = scores(recent[TARGET], recent["prediction"])["wape"]
            record["error_alarm"] = bool(
                wape is not None and wape > spec.error_factor * champion.val_wape
            )
        due = month - last_retrain >= max(spec.min_months_between, 1)
        if policy.kind == "every":
            retrain = month - last_retrain >= policy.every_months
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
        if month % 12 == 11:
            logger.info(
                "policy %s: replayed up to %s, %d retrain(s) so far",
                policy.name,
                format_period(month),
                len(out.events),
            )
    return out


def _challenge(
    ctx: BacktestData, champion: Deployed, live: list[pd.DataFrame], month: int
) -> tuple[Deployed, bool]:
    """Fit a challenger up to ``month - validation_months``; promote it if better live."""
    cut = month - ctx.spec.validation_months
    challenger, _ = ctx.fit(cut)
    val = ctx.known[ctx.known[T].between(cut + 1, month)]
    chall = scores(val[TARGET], challenger.predict(val[ctx.cols]))["wape"]
    seen = pd.concat(live, ignore_index=True)
    seen = seen[seen[T].between(cut + 1, month) & seen[TARGET].notna()]
    champ = scores(seen[TARGET], seen["prediction"])["wape"]
    if chall < champ:
        return ctx.deploy(month, float(chall)), True
    return champion, False


def run_backtest(ctx: BacktestData) -> list[Replay]:
    """Replay every policy (in parallel across policies); same data, same months."""
    spec = ctx.spec
    logger.info(
        "backtest: %d policies from %s to %s, %d worker(s)",
        len(spec.policies),
        spec.first_train_end,
        spec.end,
        spec.n_jobs,
    )
    return Parallel(n_jobs=spec.n_jobs, verbose=0)(
        delayed(replay_policy)(ctx, p, logger.getEffectiveLevel()) for p in spec.policies
    )


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
