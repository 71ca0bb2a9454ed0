"""Production replayed on history: deploy, forecast, observe, monitor, retrain, redeploy.

Each period the deployed model (the champion) forecasts the period; once its values are
known the error is recorded and the policy decides whether to retrain
(:func:`~panelcast.monitoring.policy.decide`, shared with the production cycle). A
retrain fits a challenger on the expanding window up to ``validation_periods`` before now
and compares it with the champion's *live* error on those periods; it is promoted (refit
on everything known) only when it is better and, with ``backtest.gate``, when it also
passes ``evaluate.gate`` on those periods (its WAPE, and its MAE gain over the best rule
of ``baseline.rules`` there, the rules trained up to the challenger's cutoff). A policy
``on_error`` with ``per_segment`` may instead refit some routed segments alone: their
statistical models are refitted at the current cutoff, the global model and the other
segments stay (the champion's ``segments``). Every policy replays the same periods on the
same data, so their errors and costs compare directly: full ``fits``, ``segment_refits``
and the CPU seconds of the fits it used (each fit timed once, when first computed:
:attr:`BacktestData.cpu`, summed per policy by :func:`costs`; a measurement, kept out of
:func:`summarise`'s reproducible figures). Periods are
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

**The deployed selection, replayed.** Each cutoff's global model has the hyperparameters
the train stage deployed, and each segment the manifest routes to a statistical family or
a combination (``routes``) is forecast by its deployed specification refitted on its
labelled series up to the cutoff (from its first labelled period), blended with the global
forecast as the pipeline does (:func:`~panelcast.modelling.statistical.blend`). A segment
with fewer than ``min_stat_periods`` labelled periods up to a cutoff, or whose refit
fails, keeps the global forecast for that cutoff (counted in :attr:`BacktestData.fallbacks`);
so do the positions a statistical model cannot forecast (its series' first period, a
seasonal naive's first season). The one-step forecasts are those of
:meth:`~panelcast.modelling.statistical.FittedStat.one_step` over the segment's series
(past-only), computed only at the positions asked
(:meth:`~panelcast.modelling.statistical.FittedStat.at`): each forecast after the cutoff
costs one ``forward`` (about 1 ms), so the routed forecasts are not predicted ahead. The
drift profile of a champion holds its global model's in-sample predictions, as the train
stage's reference does; the monitored windows hold the routed forecasts, as the drift
stage's do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, parallel_config
from threadpoolctl import threadpool_limits

from ..core.config import BacktestSpec, GateSpec, NamedPeriod, PolicySpec, TrainSpec
from ..core.periods import LEVEL_FEATURE, PREDICTION, TARGET, Calendar, T
from ..core.progress import Progress
from ..modelling.evaluation import gain_pct, gate
from ..modelling.metrics import scores
from ..modelling.model import fit_model
from ..modelling.rules import GridRows, rule_forecasts
from ..modelling.statistical import FittedStat, blend
from .drift import DriftThresholds, build_profile, compare
from .policy import Observation, decide
from .reference import monitored_frame, steady_state

logger = logging.getLogger(__name__)

#: Periods predicted in one call after a period a model had not predicted yet.
PREDICT_AHEAD = 12

#: A champion's per-segment refits: (routed series code, cutoff) pairs, in code order.
Segments = tuple[tuple[int, int], ...]

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
    """The champion: model, its drift reference and its validation error; ``segments``
    are the routed segments refitted alone since (code, cutoff), forecast by their
    statistical model of that cutoff."""

    model: Any
    profile: dict
    val_wape: float
    trained_until: int
    segments: Segments = ()


@dataclass
class Replay:
    """What one policy did, period by period: its full retrains (``events``, ``fits``), its
    refits of segments alone (``segment_events``, ``segment_refits``), the challengers the
    gate refused and the fits it used (``used``: keys of :attr:`BacktestData.cpu`)."""

    policy: str
    periods: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    fits: int = 0
    segment_events: list[dict] = field(default_factory=list)
    segment_refits: int = 0
    gate_refused: int = 0
    used: set[tuple] = field(default_factory=set)
    cpu_s: float = 0.0  # CPU seconds of the fits in ``used`` (see run_backtest)


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
    #: segment -> (family, specification) of the segments routed to a statistical family or
    #: a combination; every other segment is forecast by the global model
    routes: dict[str, tuple[str, dict]] = field(default_factory=dict)
    season_length: int = 1
    #: fewer labelled periods up to a cutoff: the segment keeps the global forecast there
    min_stat_periods: int = 1
    #: the rules a champion's best rule is chosen among (``baseline.rules``)
    rules: tuple[str, ...] = ()
    #: the gate a challenger must pass with ``spec.gate`` (``evaluate.gate``)
    gate: GateSpec | None = None

    def __post_init__(self) -> None:
        if self.spec.gate and (self.gate is None or not self.rules):
            raise ValueError(
                "backtest.gate is true: the replay needs the gate (evaluate.gate) and the "
                f"rules (baseline.rules); got gate={self.gate!r}, rules={list(self.rules)}."
            )
        self.start = self.calendar.parse(self.spec.first_train_start)
        self._t = self.frame[T].to_numpy()
        self._known = self.frame[TARGET].notna().to_numpy()
        self._models: dict[int, Any] = {}
        self._wape: dict[int, float] = {}
        self._deployed: dict[int, Deployed] = {}
        # per cutoff: the global model's prediction of every row of the frame (NaN until
        # its period is predicted) and the periods predicted so far; the same for the
        # routed forecasts (the global ones themselves without routes)
        self._glob: dict[int, np.ndarray] = {}
        self._glob_periods: dict[int, set[int]] = {}
        self._pred: dict[int, np.ndarray] = {}
        self._pred_periods: dict[int, set[int]] = {}
        self._series, self._route_of, self._index_in = _routed_series(
            self.frame, self.segment, self.routes
        )
        self._code_of = {series.name: code for code, series in enumerate(self._series)}
        self._stats: dict[tuple[int, int], FittedStat | None] = {}
        self.fallbacks = 0  # (cutoff, segment) pairs that kept the global forecast
        self._fell_back: dict[str, str] = {}  # segment -> why, at its first fallback
        self._drift: dict[tuple[int, int], dict] = {}
        self._present = set(np.unique(self._t).tolist())
        self._fit_opts = (self.scale, LEVEL_FEATURE, self.threads)  # fit_model's last arguments
        # per period: the rows of its drift window and their monitored frame
        self._windows: dict[int, tuple[np.ndarray, pd.DataFrame]] = {}
        #: CPU seconds of each fit when first computed: ("global", cutoff) and
        #: ("stat", cutoff, code) (the refit of routed series ``code``)
        self.cpu: dict[tuple, float] = {}
        self._scores: dict[int, dict] = {}
        self._segment_val: dict[int, dict[str, float]] = {}
        self._rule_preds: dict[int, dict[str, np.ndarray]] = {}
        self._best_rule: dict[int, tuple[str, float]] = {}
        self._grid: tuple | None = None

    @property
    def fitted(self) -> int:
        """Distinct models fitted so far (one per training cutoff)."""
        return len(self._models)

    @property
    def refitted(self) -> int:
        """Statistical models refitted so far (one per cutoff and routed segment)."""
        return sum(stat is not None for stat in self._stats.values())

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
            self._models[until], cpu = _timed_fit(*args, self.train, *self._fit_opts)
            self.cpu["global", until] = cpu
        return self._models[until]

    def stat_codes(self) -> range:
        """Codes of the routed series (see :meth:`segment_code`)."""
        return range(len(self._series))

    def segment_code(self, name: str) -> int:
        """The code of routed segment ``name`` (KeyError: not routed)."""
        return self._code_of[name]

    def full_fit(self, until: int) -> set[tuple]:
        """Keys of :attr:`cpu` of a whole deployment at ``until``: global and routed fits."""
        return {("global", until)} | {("stat", until, code) for code in self.stat_codes()}

    def prefit(self, cutoffs: set[int], n_jobs: int) -> None:
        """Fit the cutoffs not fitted yet in ``n_jobs`` processes (each pinned to ``threads``)."""
        todo = sorted(c for c in cutoffs if c not in self._models)
        if not todo:
            return
        logger.info(
            "backtest: fitting %d cutoff(s) known in advance in %d process(es)", len(todo), n_jobs
        )
        progress = Progress("backtest fits", len(todo), "models", log=logger)
        fit = delayed(_timed_fit)
        with parallel_config(backend="loky", inner_max_num_threads=self.threads):
            done = Parallel(n_jobs=n_jobs, return_as="generator")(
                fit(*_fit_args(self._training_rows(c), self.cols), self.train, *self._fit_opts)
                for c in todo
            )
            for k, (cut, (model, cpu)) in enumerate(zip(todo, done, strict=True), start=1):
                self._models[cut], self.cpu["global", cut] = model, cpu
                progress.update(k)

    def predict_global(self, until: int, pos: np.ndarray) -> np.ndarray:
        """Predictions of :meth:`model` ``(until)`` (the global model) for the rows at ``pos``.

        Each period is predicted once per model (a row's prediction does not depend on the
        other rows predicted with it), then served from the cache; a period not predicted
        yet is predicted together with the ``PREDICT_AHEAD`` periods after it.
        """
        done = self._glob_periods.setdefault(until, set())
        missing = [m for m in np.unique(self._t[pos]).tolist() if m not in done]
        if missing:
            # a champion is asked for one new period at a time: predict the periods after it
            # in the same call (one call per period would cost ~10 ms each in overhead)
            ahead = range(missing[-1] + 1, missing[-1] + 1 + PREDICT_AHEAD)
            missing += [m for m in ahead if m in self._present and m not in done]
            cache = self._glob.setdefault(until, np.full(len(self.frame), np.nan))
            new = np.flatnonzero(np.isin(self._t, missing))
            cache[new] = self.model(until).predict(self.frame.iloc[new][self.cols])
            done.update(missing)
        return self._glob[until][pos]

    def predict(self, until: int, pos: np.ndarray, segments: Segments = ()) -> np.ndarray:
        """The deployed forecasts of cutoff ``until`` for the rows at ``pos``: the global
        model's, replaced on the routed segments by their statistical model's (blended),
        of the cutoff ``segments`` gives for the segments refitted alone.

        Memoised per period like :meth:`predict_global`, without the periods ahead: a
        statistical forecast after the cutoff costs one ``forward`` (about 1 ms) per row.
        """
        if not self._series:
            return self.predict_global(until, pos)
        key = (until, segments) if segments else until
        done = self._pred_periods.setdefault(key, set())
        missing = [m for m in np.unique(self._t[pos]).tolist() if m not in done]
        if missing:
            cache = self._pred.setdefault(key, np.full(len(self.frame), np.nan))
            new = np.flatnonzero(np.isin(self._t, missing))
            cache[new] = self.predict_global(until, new)
            self._route(until, new, cache, dict(segments))
            done.update(missing)
        return self._pred[key][pos]

    def _route(
        self, until: int, rows: np.ndarray, cache: np.ndarray, cutoffs: dict[int, int]
    ) -> None:
        """Overwrite ``cache`` at ``rows`` (global forecasts) with the routed segments'
        blended statistical forecasts of cutoff ``until`` (of ``cutoffs[code]`` for the
        segments refitted alone), where they have one."""
        codes = self._route_of[rows]
        for code in np.unique(codes[codes >= 0]).tolist():
            mine = rows[codes == code]
            idx = self._index_in[mine]
            mine, idx = mine[idx >= 0], idx[idx >= 0]  # rows before the first labelled one
            stat = self._stat(cutoffs.get(code, until), code) if len(mine) else None
            if stat is None:
                continue
            series = self._series[code]
            blended = blend(series.family, cache[mine], stat.at(series.y, idx))
            known = ~np.isnan(blended)
            cache[mine[known]] = blended[known]

    def _stat(self, until: int, code: int) -> FittedStat | None:
        """The statistical model of routed series ``code`` refitted up to ``until`` (None:
        too short, or the refit failed; then the segment keeps the global forecast)."""
        key = (until, code)
        if key not in self._stats:
            series = self._series[code]
            n_fit = int(np.searchsorted(series.t, until, side="right"))
            n_known = int(np.count_nonzero(~np.isnan(series.y[:n_fit])))
            stat, why = None, ""
            if n_known < self.min_stat_periods:
                why = f"{n_known} labelled period(s) < {self.min_stat_periods}"
            else:
                cpu = time.process_time()
                try:
                    stat = FittedStat(
                        series.family, series.spec, series.y[:n_fit], self.season_length
                    )
                    stat.at(series.y, [n_fit - 1])  # the in-sample pass fails here, if at all
                except Exception as exc:  # counted and logged: the global forecast stands in
                    stat, why = None, f"the refit failed ({type(exc).__name__}: {exc})"
                self.cpu["stat", until, code] = time.process_time() - cpu
            if stat is None:
                self.fallbacks += 1
                if series.name not in self._fell_back:
                    self._fell_back[series.name] = why
                    logger.info(
                        "backtest: segment %r (%s) keeps the global forecast for cutoff %s: "
                        "%s (logged once per segment)",
                        series.name,
                        series.family,
                        self.calendar.format(until),
                        why,
                    )
            self._stats[key] = stat
        return self._stats[key]

    def validation_wape(self, until: int) -> float:
        """WAPE of a model fitted up to ``until - validation_periods`` on the periods after it."""
        if until not in self._wape:
            self._wape[until] = float(self.validation_scores(until)["wape"])
        return self._wape[until]

    def validation_scores(self, until: int) -> dict:
        """Scores (``mae``, ``wape``...) of :meth:`validation_wape`'s model and rows."""
        if until not in self._scores:
            cut = until - self.spec.validation_periods
            pos = self.positions(cut + 1, until, known=True)
            self._scores[until] = scores(self.frame[TARGET].to_numpy()[pos], self.predict(cut, pos))
        return self._scores[until]

    def segment_validation_wape(self, until: int) -> dict[str, float]:
        """Per routed segment, the WAPE of :meth:`validation_wape` on its own rows."""
        if until not in self._segment_val:
            cut = until - self.spec.validation_periods
            pos = self.positions(cut + 1, until, known=True)
            self._segment_val[until] = self._segment_wape(
                pos, self.predict(cut, pos), self.frame[TARGET].to_numpy()[pos]
            )
        return self._segment_val[until]

    def _segment_wape(
        self, pos: np.ndarray, pred: np.ndarray, actual: np.ndarray
    ) -> dict[str, float]:
        """Per routed segment with rows at ``pos``, the WAPE of ``pred`` against ``actual``."""
        codes = self._route_of[pos]
        out = {}
        for code in np.unique(codes[codes >= 0]).tolist():
            mine = codes == code
            total = float(np.abs(actual[mine]).sum())
            if total > 0:
                out[self._series[code].name] = float(
                    np.abs(pred[mine] - actual[mine]).sum() / total
                )
        return out

    def segment_window_wape(self, pos: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        """Per routed segment, the WAPE of ``pred`` on the known rows at ``pos``."""
        known = self._known[pos]
        pos, pred = pos[known], pred[known]
        return self._segment_wape(pos, pred, self.frame[TARGET].to_numpy()[pos])

    # ----------------------------------------------------------------- the rules

    def rule_predictions(self, until: int) -> dict[str, np.ndarray]:
        """Each rule's forecast of every row of the frame, its training window being the
        known rows from ``first_train_start`` to ``until`` (NaN off the grid)."""
        if until not in self._rule_preds:
            if self._grid is None:
                self._grid = _rule_grid(self.frame, self.segment)
            codes, grid_t, grid_y, at = self._grid
            train = (grid_t >= self.start) & (grid_t <= until)
            forecasts, _ = rule_forecasts(
                GridRows(codes, grid_t, grid_y, train),
                self.calendar.season_length,
                list(self.rules),
            )
            self._rule_preds[until] = {r: f[at] for r, f in forecasts.items()}
        return self._rule_preds[until]

    def best_rule(self, until: int) -> tuple[str, float]:
        """The rule with the lowest MAE on :meth:`validation_wape`'s rows (trained up to
        their start, as the challenger of cutoff ``until``), and that MAE."""
        if until not in self._best_rule:
            cut = until - self.spec.validation_periods
            pos = self.positions(cut + 1, until, known=True)
            actual = self.frame[TARGET].to_numpy()[pos]
            preds = self.rule_predictions(cut)
            maes = {r: float(scores(actual, preds[r][pos])["mae"]) for r in self.rules}
            best = min(self.rules, key=lambda r: maes[r])
            self._best_rule[until] = best, maes[best]
        return self._best_rule[until]

    def passes_gate(self, until: int) -> tuple[bool, list[str]]:
        """The challenger of cutoff ``until`` against :attr:`gate` on its validation rows:
        its WAPE, and its MAE gain over the best rule (:meth:`best_rule`)."""
        model = self.validation_scores(until)
        rule, rule_mae = self.best_rule(until)
        passed, reasons = gate(model, gain_pct(model["mae"], rule_mae), self.gate)
        return passed, [f"{r} ({rule})" if "best rule" in r else r for r in reasons]

    def deployed(self, until: int) -> Deployed:
        """The model of cutoff ``until`` as a champion: its drift profile and validation WAPE."""
        if until not in self._deployed:
            pos = self.positions(self.start, until, known=True)
            rows = self.frame.iloc[pos]
            pred = self.predict_global(until, pos)  # as the train stage's reference
            steady = steady_state(rows, self.segment, self.warmup).to_numpy()
            mon, num, cat = monitored_frame(rows[steady], self.cols, pred[steady])
            self._deployed[until] = Deployed(
                self.model(until),
                build_profile(mon, num, cat),
                self.validation_wape(until),
                until,
            )
        return self._deployed[until]

    def drift(self, until: int, period: int, segments: Segments = ()) -> dict:
        """Drift of the latest ``drift_window_periods`` up to ``period`` against the profile
        of the model of cutoff ``until`` (its predictions, with ``segments``, included)."""
        key = (until, period, segments) if segments else (until, period)
        if key not in self._drift:
            if period not in self._windows:
                # the monitored window without the model's part, shared by every model:
                # monitored_frame's prediction column holds the predictions, as floats
                pos = self.positions(period - self.spec.drift_window_periods + 1, period)
                mon, _, _ = monitored_frame(self.frame.iloc[pos], self.cols, np.zeros(len(pos)))
                self._windows[period] = pos, mon
            pos, mon = self._windows[period]
            mon = mon.assign(**{PREDICTION: self.predict(until, pos, segments)})
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


def _timed_fit(*args: Any) -> tuple[Any, float]:
    """``fit_model(*args)``'s model and the CPU seconds of the fit (in this process)."""
    cpu = time.process_time()
    model, _ = fit_model(*args)
    return model, time.process_time() - cpu


def _rule_grid(
    frame: pd.DataFrame, segment: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The frame's target on a grid (every period from each segment's first row to its
    last, missing where it has no row), as the rules read it: segment codes, periods and
    values of the grid, and each frame row's position in it. Without the segment column,
    one series."""
    if segment in frame.columns:
        codes, _ = pd.factorize(frame[segment].astype(str), sort=True)
    else:
        codes = np.zeros(len(frame), dtype=np.int64)
    t = frame[T].to_numpy(dtype=np.int64)
    n_codes = int(codes.max(initial=-1)) + 1
    first = np.full(n_codes, np.iinfo(np.int64).max)
    last = np.full(n_codes, np.iinfo(np.int64).min)
    np.minimum.at(first, codes, t)
    np.maximum.at(last, codes, t)
    lengths = last - first + 1
    starts = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    at = starts[codes] + t - first[codes]
    grid_codes = np.repeat(np.arange(n_codes), lengths)
    grid_t = np.repeat(first - starts, lengths) + np.arange(int(lengths.sum()))
    grid_y = np.full(len(grid_t), np.nan)
    grid_y[at] = frame[TARGET].to_numpy(dtype=np.float64)
    return grid_codes, grid_t, grid_y, at


@dataclass(frozen=True)
class RoutedSeries:
    """A routed segment's series, in period order from its first labelled period."""

    name: str
    family: str
    spec: dict
    t: np.ndarray
    y: np.ndarray


def _routed_series(
    frame: pd.DataFrame, segment: str, routes: dict[str, tuple[str, dict]]
) -> tuple[list[RoutedSeries], np.ndarray, np.ndarray]:
    """The series of the routed segments present in ``frame``, and per row of the frame
    its series (-1: not routed) and its position in it (-1: before its first label)."""
    route_of = np.full(len(frame), -1, dtype=np.int64)
    index_in = np.full(len(frame), -1, dtype=np.int64)
    series: list[RoutedSeries] = []
    if not routes or segment not in frame.columns:
        return series, route_of, index_in
    names = frame[segment].astype(str).to_numpy()
    t_all, y_all = frame[T].to_numpy(), frame[TARGET].to_numpy(dtype=np.float64)
    for name in sorted(set(routes) & set(np.unique(names).tolist())):
        rows = np.flatnonzero(names == name)
        rows = rows[np.argsort(t_all[rows], kind="stable")]
        labelled = np.flatnonzero(~np.isnan(y_all[rows]))
        if not len(labelled):
            continue  # never labelled: the global forecast throughout
        rows = rows[labelled[0] :]
        family, spec = routes[name]
        route_of[rows] = len(series)
        index_in[rows] = np.arange(len(rows))
        series.append(RoutedSeries(name, family, spec, t_all[rows], y_all[rows]))
    return series, route_of, index_in


# --------------------------------------------------------------------------- the replay


def replayed_periods(ctx: BacktestData) -> list[int]:
    """The replayed periods: from after the first training window to the end, with rows."""
    cal = ctx.calendar
    first_end, end = cal.parse(ctx.spec.first_train_end), cal.parse(ctx.spec.end)
    return [p for p in range(first_end + 1, end + 1) if p in ctx._present]


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
            obs = Observation(period, period - last, False, False, None, None, 0.0)
            if decide(policy, spec, obs).retrain:
                cuts.add(period - spec.validation_periods)
                last = period
    return cuts


@dataclass
class _Watch:
    """What ``on_error`` reads besides the error alarm: the champion's best rule and the
    routed segments' errors (computed only for that kind)."""

    ctx: BacktestData
    champion: Deployed
    rule: str | None = None

    def __post_init__(self) -> None:
        if self.ctx.rules:
            self.rule = self.ctx.best_rule(self.champion.trained_until)[0]

    def rule_forecasts(self, pos: np.ndarray) -> np.ndarray:
        if self.rule is None:
            return np.full(len(pos), np.nan)
        return self.ctx.rule_predictions(self.champion.trained_until)[self.rule][pos]


def _replay(ctx: BacktestData, policy: PolicySpec, progress: Progress, done: int) -> Replay:
    spec, cal = ctx.spec, ctx.calendar
    first_end = cal.parse(spec.first_train_end)
    out = Replay(policy.name)
    champion = ctx.deployed(first_end)
    out.fits += 2
    out.used |= ctx.full_fit(first_end) | ctx.full_fit(first_end - spec.validation_periods)
    last_retrain = first_end
    kept_in_a_row = 0  # challengers kept since the last promotion
    refitted_at: dict[str, int] = {}  # segment -> period of its last refit alone
    watch = _Watch(ctx, champion) if policy.kind == "on_error" else None
    routed = frozenset(ctx.routes) & frozenset(ctx._code_of)
    live = []  # champion's live forecasts of every period so far
    periods = replayed_periods(ctx)
    for k, period in enumerate(periods, start=1):
        pos = ctx.positions(period, period)
        rows = ctx.frame.iloc[pos]
        frame = rows[[ctx.segment, T, TARGET]].assign(
            prediction=ctx.predict(champion.trained_until, pos, champion.segments)
        )
        if watch is not None:
            frame = frame.assign(rule=watch.rule_forecasts(pos), pos=pos)
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
        record.update(ctx.drift(champion.trained_until, period, champion.segments))
        recent = history[history[T] > period - spec.error_window_periods]
        recent = recent[recent[TARGET].notna()]
        wape = None
        if len(recent):
            wape = scores(recent[TARGET], recent["prediction"])["wape"]
            record["error_alarm"] = bool(
                wape is not None and wape > spec.error_factor * champion.val_wape
            )
        obs = Observation(
            period,
            period - last_retrain,
            record["drifted"],
            record["error_alarm"],
            wape,
            None,
            champion.val_wape,
            kept_in_a_row=kept_in_a_row,
        )
        if watch is not None and len(recent):
            obs = _watched(ctx, watch, obs, recent, routed, refitted_at)
        decision = decide(policy, spec, obs)
        if decision.retrain:
            champion, promoted, refused = _challenge(ctx, champion, live, period)
            cut = period - spec.validation_periods
            out.fits += 2 if promoted else 1
            out.used |= ctx.full_fit(cut) | (ctx.full_fit(period) if promoted else set())
            out.gate_refused += refused
            kept_in_a_row = 0 if promoted else kept_in_a_row + 1
            if promoted:
                refitted_at.clear()
                if watch is not None:
                    watch = _Watch(ctx, champion)
            last_retrain = period
            record["retrain"] = "promoted" if promoted else "kept"
            event = {"period": cal.format(period), "promoted": promoted}
            event["trigger"] = decision.trigger
            if refused:
                event["gate_refused"] = True
            out.events.append(event)
        elif decision.segments:
            codes = {ctx.segment_code(name): period for name in decision.segments}
            champion = replace(
                champion, segments=tuple(sorted((dict(champion.segments) | codes).items()))
            )
            out.segment_refits += len(codes)
            out.used |= {("stat", period, code) for code in codes}
            refitted_at |= dict.fromkeys(decision.segments, period)
            out.segment_events.append(
                {
                    "period": cal.format(period),
                    "trigger": decision.trigger,
                    "segments": list(decision.segments),
                }
            )
        out.periods.append(record)
        progress.update(
            done + k,
            f"policy {policy.name}: {k}/{cal.count(len(periods))}, up to {cal.format(period)}, "
            f"{len(out.events)} retrain(s), {ctx.fitted} distinct fit(s)",
        )
    return out


def _watched(
    ctx: BacktestData,
    watch: _Watch,
    obs: Observation,
    recent: pd.DataFrame,
    routed: frozenset[str],
    refitted_at: dict[str, int],
) -> Observation:
    """``obs`` with what ``on_error`` reads: the best rule's WAPE over the error window
    and, per routed segment, the champion's and the rule's WAPE there and its validation
    WAPE (that of the champion's deployment, kept after a refit alone)."""
    rule_wape = None
    pos, pred = recent["pos"].to_numpy(), recent["prediction"].to_numpy()
    seg_rule: dict[str, float] = {}
    if watch.rule is not None:
        rule_wape = scores(recent[TARGET], recent["rule"])["wape"]
        seg_rule = ctx.segment_window_wape(pos, recent["rule"].to_numpy())
    return replace(
        obs,
        rule_window_wape=rule_wape,
        segment_window_wape=ctx.segment_window_wape(pos, pred),
        segment_rule_window_wape=seg_rule,
        segment_validation_wape=ctx.segment_validation_wape(watch.champion.trained_until),
        routed_segments=routed,
        segment_since_refit={s: obs.period - p for s, p in refitted_at.items()},
    )


def _challenge(
    ctx: BacktestData, champion: Deployed, live: list[pd.DataFrame], period: int
) -> tuple[Deployed, bool, bool]:
    """Fit a challenger up to ``period - validation_periods``; promote it if better live
    (and, with ``backtest.gate``, if it passes the gate). The new champion, whether it
    was promoted, whether the gate refused it."""
    cut = period - ctx.spec.validation_periods
    chall = ctx.validation_wape(period)  # the challenger's WAPE on the periods after ``cut``
    seen = pd.concat(live, ignore_index=True)
    seen = seen[seen[T].between(cut + 1, period) & seen[TARGET].notna()]
    champ = scores(seen[TARGET], seen["prediction"])["wape"]
    if chall < champ:
        if ctx.spec.gate:
            passed, reasons = ctx.passes_gate(period)
            if not passed:
                logger.debug(
                    "backtest: the challenger of %s is better live but the gate refused it: %s",
                    ctx.calendar.format(period),
                    "; ".join(reasons),
                )
                return champion, False, True
        return ctx.deployed(period), True, False
    return champion, False, False


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
    for r in replays:  # what each policy's fits cost when first computed, whoever asked
        r.cpu_s = float(sum(ctx.cpu.get(key, 0.0) for key in r.used))
    logger.info(
        "backtest: %d distinct fits for %d policies in %.0f s",
        ctx.fitted,
        len(spec.policies),
        time.perf_counter() - started,
    )
    if ctx.routes:
        logger.info(
            "backtest: %d statistical refit(s) of %d routed segment(s); %d (cutoff, segment) "
            "pair(s) kept the global forecast",
            ctx.refitted,
            len(ctx.routes),
            ctx.fallbacks,
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
            "segment_refits": r.segment_refits,
            "gate_refused": r.gate_refused,
            "drift_periods": periods.loc[periods["drifted"].astype(bool), "period"].tolist(),
            "error_alarm_periods": periods.loc[
                periods["error_alarm"].astype(bool), "period"
            ].tolist(),
            "events": r.events,
            "segment_events": r.segment_events,
        }
    return out


def costs(replays: list[Replay], ctx: BacktestData) -> dict:
    """CPU seconds, a measurement (not reproducible to the byte): per policy, those of the
    fits it used (``cpu_s``, what it would cost alone in production) next to its counts;
    per kind of fit, how many the replay computed and their total."""
    kinds: dict[str, list[float]] = {"global": [], "stat": []}
    for key, cpu in ctx.cpu.items():
        kinds[key[0]].append(cpu)
    return {
        "policies": {
            r.policy: {
                "cpu_s": round(r.cpu_s, 3),
                "fits": r.fits,
                "segment_refits": r.segment_refits,
            }
            for r in replays
        },
        "distinct_fits": {
            kind: {"count": len(v), "cpu_s": round(float(sum(v)), 3)} for kind, v in kinds.items()
        },
    }


def _pooled(periods: pd.DataFrame, prefix: str) -> dict[str, float | None]:
    """MAE and WAPE pooled over all scored segment-periods of ``periods``."""
    n, err, actual = periods["n"].sum(), periods["abs_error"].sum(), periods["actual"].sum()
    return {
        f"{prefix}mae": round(float(err / n), 4) if n else None,
        f"{prefix}wape": round(float(err / actual), 6) if actual else None,
        f"{prefix}n": int(n),
    }
