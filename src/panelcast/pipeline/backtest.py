"""Stage backtest: replay production period by period and compare retraining policies.

The replay deploys, at every training cutoff, the selection the train stage deployed
(:class:`Selection`, read from its outputs) refitted on the expanding window: the global
model with the hyperparameters (and segment encoding) the time-ordered search chose, and
each segment the manifest routes to a statistical family or a combination with its
deployed specification, refitted on the segment's labelled series up to the cutoff and
blended with the global forecast as the pipeline does. Segments with their own
scikit-learn model (family ``sklearn``) are replayed on the global model.

The specification and the hyperparameters were chosen on the training window ending at
``windows.train_end``, so the replay's early years use a selection made with later data:
a mild look-ahead, the one the searched hyperparameters already had. Re-running the
selection at each cutoff would cost the search's fits (24 with the default grid) plus the
statistical selection of every segment, per cutoff; the replay refits only.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..core.config import Params
from ..core.errors import DataError, ModelFileError, ParamsError
from ..core.periods import PERIOD, T
from ..modelling.features import feature_columns
from ..modelling.many import GLOBAL, SKLEARN
from ..modelling.model import with_unit
from ..modelling.statistical import STAT_FAMILIES, is_statistical
from ..monitoring.backtest import (
    RECORD_COLUMNS,
    BacktestData,
    costs,
    replayed_periods,
    run_backtest,
    summarise,
)
from ..monitoring.reference import drift_thresholds
from ..report.figures import backtest_figure

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backtest:
    """The backtest's metrics, plot tables and figure, and the CPU its policies' fits cost
    (``costs``: a measurement, kept out of the reproducible metrics)."""

    metrics: dict
    plots: dict[str, pd.DataFrame]
    figure_png: bytes
    costs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Selection:
    """The model selection the train stage deployed: the global model's hyperparameters
    and segment encoding, and every segment's entry of the manifest (``segment``,
    ``family``, ``candidate``: its specification)."""

    hyperparameters: dict[str, Any]
    segment_encoding: str | None = None
    strategy: str = GLOBAL
    models: list[dict] = field(default_factory=list)


def deployed_selection(
    train_metrics: dict,
    metadata: dict,
    manifest: dict,
    names: tuple[str, str, str] = (
        "metrics/train.json",
        "models/metadata.json",
        "models/segments/manifest.json",
    ),
) -> Selection:
    """The :class:`Selection` of the train stage's outputs: ``chosen`` and
    ``segment_encoding`` of its metrics, checked against the model card of ``metadata``,
    and the manifest's entries, whose global ones must name the model of ``metadata``.
    ``names`` are the three files, for the messages."""
    metrics_name, metadata_name, manifest_name = names
    restore = "rerun `dvc repro train` (or `dvc checkout`)"
    chosen = train_metrics.get("chosen")
    if not isinstance(chosen, dict):
        raise DataError(
            f"{metrics_name}: key 'chosen' (the deployed hyperparameters) is missing or not "
            f"a mapping (found {type(chosen).__name__}); {restore}."
        )
    card = metadata.get("model", {}).get("params", {})
    differ = sorted(k for k, v in chosen.items() if k in card and card[k] != v)
    if differ:
        raise ModelFileError(
            f"{metrics_name} and {metadata_name} come from different train runs: the "
            f"hyperparameter(s) {differ} differ (e.g. {differ[0]}: {chosen[differ[0]]!r} "
            f"against {card[differ[0]]!r}); {restore}."
        )
    models = manifest.get("models")
    if not isinstance(models, list):
        raise DataError(f"{manifest_name}: key 'models' is missing or not a list; {restore}.")
    stale = [
        e.get("segment")
        for e in models
        if e.get("family") == GLOBAL and e.get("sha256") != metadata.get("sha256")
    ]
    if stale:
        raise ModelFileError(
            f"{manifest_name}: the global model it routes {len(stale)} segment(s) to (e.g. "
            f"{stale[:3]}) is not the one {metadata_name} describes (sha256 differs): the "
            f"two come from different runs; {restore}."
        )
    families = {str(e.get("family")) for e in models}
    unknown = sorted(f for f in families if f not in (GLOBAL, SKLEARN) and not is_statistical(f))
    if unknown:
        raise ModelFileError(
            f"{manifest_name}: unknown famil(y/ies) {unknown}; expected one of "
            f"{[GLOBAL, SKLEARN, *STAT_FAMILIES]} or a combination such as 'global+theta'."
        )
    return Selection(
        dict(chosen),
        train_metrics.get("segment_encoding"),
        str(manifest.get("strategy", GLOBAL)),
        list(models),
    )


def backtest(
    features: pd.DataFrame, params: Params, selection: Selection | None = None
) -> Backtest:
    """Replay every policy of ``params.backtest`` on ``features``.

    ``selection`` is what the train stage deployed (:func:`deployed_selection`); without
    it, the configured ``train.hyperparameters`` on every segment. The metrics hold, per
    policy, the pooled error overall and in each of ``problem.named_periods``
    (``<name>_mae``...), and the ``selection`` replayed; the plot tables have one row per
    replayed period (column ``period``). The challengers are gated by ``evaluate.gate``
    against ``baseline.rules`` when ``backtest.gate`` is true; ``costs`` holds the CPU
    seconds of each policy's fits (a measurement, not in the metrics).
    """
    spec, problem = params.backtest, params.problem
    cal = problem.calendar
    selection = selection or Selection(dict(params.train.hyperparameters))
    families = _families(features, problem.segment_column, selection)
    ctx = replay_data(features, params, selection)
    logger.info(
        "backtest: replaying strategy %s (%s), hyperparameters %s%s",
        selection.strategy,
        ", ".join(f"{f}: {n}" for f, n in families.items()),
        ctx.train.hyperparameters,
        f"; {families[SKLEARN]} scikit-learn segment(s) replayed on the global model"
        if SKLEARN in families
        else "",
    )
    replayed = replayed_periods(ctx)
    if not replayed:
        span = (
            f"{cal.format(features[T].min())}..{cal.format(features[T].max())}"
            if len(features)
            else "nothing"
        )
        raise ParamsError(
            f"params keys 'backtest.first_train_end/end': no period of the feature table "
            f"falls after {spec.first_train_end} and up to {spec.end} (the table spans {span})."
        )
    replays = run_backtest(ctx)
    summary = summarise(replays, cal, problem.named_periods)
    cost = costs(replays, ctx)
    periods = pd.DataFrame(
        [row for r in replays for row in r.periods], columns=list(RECORD_COLUMNS)
    )
    result = {
        # what the backtest fitted: each distinct training cutoff once, shared by the
        # policies (a policy's own "fits" is what it would cost in production)
        "distinct_fits": ctx.fitted,
        "first_training_window": {"start": spec.first_train_start, "end": spec.first_train_end},
        "replayed": {"start": cal.format(replayed[0]), "end": cal.format(replayed[-1])},
        "named_periods": {p.name: {"start": p.start, "end": p.end} for p in problem.named_periods},
        "selection": {
            "hyperparameters": dict(ctx.train.hyperparameters),
            "segment_encoding": selection.segment_encoding,
            "strategy": selection.strategy,
            "families": families,
            # scikit-learn segment models are not replayed: their segments use the global one
            "sklearn_on_global": families.get(SKLEARN, 0),
            # (cutoff, segment) pairs where a routed segment kept the global forecast
            "fallbacks": ctx.fallbacks,
        },
        "policies": summary,
    }
    wide = periods.pivot(index=PERIOD, columns="policy", values="mae").round(3)
    effects = periods[periods["policy"] == spec.policies[0].name][
        [PERIOD, "max_effect", "share_drifted", "drifted"]
    ]
    for name, s in summary.items():
        named = "".join(
            f"  {p.name} MAE {with_unit(s[p.name + '_mae'], problem.unit):>7}"
            for p in problem.named_periods
        )
        logger.info(
            "policy %-10s MAE %7s%s  retrains %3d  fits %3d  segment refits %3d  "
            "gate refused %2d  %.1f s of CPU",
            name,
            with_unit(s["mae"], problem.unit),
            named,
            s["retrains"],
            s["fits"],
            s["segment_refits"],
            s["gate_refused"],
            cost["policies"][name]["cpu_s"],
        )
    return Backtest(
        result,
        {
            "backtest_error.csv": wide.add_suffix("_mae").reset_index(),
            "backtest_drift.csv": effects,
        },
        backtest_figure(periods, problem),
        cost,
    )


def replay_data(
    features: pd.DataFrame, params: Params, selection: Selection | None = None
) -> BacktestData:
    """The replay's shared data for ``features``: every cutoff's global model with the
    hyperparameters of ``selection`` (default: the configured ones) and its routed
    segments (see the module docstring)."""
    problem = params.problem
    train, routes = _replayed(params, selection or Selection(dict(params.train.hyperparameters)))
    return BacktestData(
        features,
        feature_columns(features, problem),
        problem.segment_column,
        max(params.features.lags),
        params.backtest,
        train,
        params.features.scale,
        drift_thresholds(params.drift),
        problem.calendar,
        threads=params.compute.threads,
        routes=routes,
        season_length=problem.calendar.season_length,
        min_stat_periods=params.train.per_segment.min_train_periods,
        rules=tuple(params.baseline.rules),
        gate=params.evaluate.gate,
    )


def _replayed(params: Params, selection: Selection) -> tuple[Any, dict[str, tuple[str, dict]]]:
    """The train spec of every replayed global model (the deployed hyperparameters and
    segment encoding, no search: it would cost its fits at each cutoff) and the routed
    segments: segment -> (family, specification) of the statistical ones."""
    changes: dict[str, Any] = {
        "hyperparameters": dict(selection.hyperparameters),
        "search": _updated(params.train.search, enabled=False),
    }
    if params.train.segment_encoding == "auto" and selection.segment_encoding in (
        "target_mean",
        "none",
    ):
        # beyond the native limit the search chose the encoding: keep its choice
        changes["segment_encoding"] = selection.segment_encoding
    routes = {
        str(e["segment"]): (str(e["family"]), dict(e.get("candidate") or {}))
        for e in selection.models
        if is_statistical(str(e["family"]))
    }
    return _updated(params.train, **changes), routes


def _families(features: pd.DataFrame, segment: str, selection: Selection) -> dict[str, int]:
    """Segments of ``features`` per deployed family (``global`` for those the manifest
    lacks), in name order."""
    by_segment = {str(e["segment"]): str(e["family"]) for e in selection.models}
    present = features[segment].astype(str).unique() if segment in features.columns else []
    counts = Counter(by_segment.get(s, GLOBAL) for s in present)
    return {f: int(n) for f, n in sorted(counts.items())}


def _updated(spec: Any, **changes: Any) -> Any:
    """A copy of a params section with ``changes`` (the one place that knows how)."""
    return spec.model_copy(update=changes)
