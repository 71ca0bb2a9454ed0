"""Stage train: fit the global model with the time-ordered search, and each segment's own
model when the strategy asks for it (one stage for all models); describe them; profile the
drift reference."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
import skops

from ..core.config import Params
from ..core.io import parquet_bytes
from ..core.periods import LEVEL_FEATURE, SEGMENT_FEATURE, TARGET, WINDOW, T
from ..modelling.features import (
    feature_columns,
    meta_columns,
    predict_in_chunks,
    read_rows,
    take_rows,
)
from ..modelling.many import (
    CV_FORECASTS,
    GLOBAL,
    SKLEARN,
    ChunkConfig,
    SegmentData,
    SegmentResult,
    build_manifest,
    candidates_of,
    choose_pooled,
    chunk_size,
    chunked,
    fit_chunk,
    global_manifest,
    pooled_scores,
    run_chunks,
)
from ..modelling.model import dumps_model, fit_model, model_card, time_folds, with_unit
from ..monitoring.drift import build_profile
from ..monitoring.reference import monitored_frame, steady_state

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trained:
    """What the train stage writes: the global model file, its metadata, the segment
    models' manifest and files (names relative to ``paths.segment_models``), the drift
    reference and the metrics."""

    model_bytes: bytes
    metadata: dict
    reference: dict
    metrics: dict
    manifest: dict
    segment_files: dict[str, bytes]


@dataclass(frozen=True)
class TrainingData:
    """What :func:`train_on` fits on: the labelled rows of the training window as the
    model's inputs ``X`` and their ``keys`` (segment, period index, target; both with a
    RangeIndex, one row each), every segment of the feature table, the training rows left
    out for want of a target, and for the per-segment strategies the whole feature table
    (or its training window) their models read."""

    X: pd.DataFrame
    keys: pd.DataFrame
    segments: list[str]
    unlabelled: int
    table: pd.DataFrame | None = None


def training_data(features: pd.DataFrame, params: Params) -> TrainingData:
    """The :class:`TrainingData` of a feature table in memory (one copy of its labelled
    training rows)."""
    seg = params.problem.segment_column
    cols = feature_columns(features, params.problem)
    in_window = (features[WINDOW] == "train").to_numpy()
    labelled = in_window & features[TARGET].notna().to_numpy()
    rows = np.flatnonzero(labelled)
    return TrainingData(
        X=take_rows(features, rows, cols),
        keys=take_rows(features, rows, [seg, T, TARGET]),
        segments=sorted(features[seg].astype(str).unique()),
        unlabelled=int((in_window & ~labelled).sum()),
        table=None if params.train.strategy == GLOBAL else features,
    )


def read_training_data(path: str | Path, params: Params) -> TrainingData:
    """The :class:`TrainingData` of the feature file ``path``, read without the rest.

    For the global strategy the model inputs and the keys of the labelled training rows
    are read apart (each a frame of its own: the fit copies nothing else), filtered inside
    the parquet reader; the segments and the count of unlabelled rows come from a read of
    three columns. The per-segment strategies read the whole training window.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    seg = params.problem.segment_column
    meta = set(meta_columns(params.problem))
    cols = [c for c in pq.read_schema(path).names if c not in meta]
    in_window = pc.field(WINDOW) == "train"
    if params.train.strategy != GLOBAL:
        window = read_rows(path, [seg, T, WINDOW, TARGET, *cols], in_window, by=(WINDOW,))
        data = training_data(window, params)
        light = pq.read_table(path, columns=[seg])
        segments = sorted(str(s) for s in pc.unique(light.column(seg)).to_pylist())
        del light
        return TrainingData(data.X, data.keys, segments, data.unlabelled, window)
    light = pq.read_table(path, columns=[seg, WINDOW, TARGET])
    train = pc.equal(light.column(WINDOW), "train")
    missing = pc.and_(train, pc.invert(pc.is_valid(light.column(TARGET))))
    unlabelled = int(pc.sum(pc.cast(missing, "int64")).as_py() or 0)
    segments = sorted(str(s) for s in pc.unique(light.column(seg)).to_pylist())
    del light, train, missing
    pa.default_memory_pool().release_unused()
    labelled = in_window & pc.field(TARGET).is_valid()
    keys = read_rows(path, [seg, T, TARGET], labelled, by=(WINDOW, TARGET))
    # the float features as arrow arrays: the model's defensive copy of its input (the
    # segment encoder's) shares them, and the estimator converts them to the float64
    # numpy values it would have read: one copy of the rows less at the peak of the fit
    X = read_rows(path, cols, labelled, by=(WINDOW, TARGET), arrow_floats=True)
    missed = keys[TARGET].isna().to_numpy()  # NaN stored as a value, not as null: left out
    if missed.any():
        keep = np.flatnonzero(~missed)
        X, keys = take_rows(X, keep, cols), take_rows(keys, keep, [seg, T, TARGET])
        unlabelled += int(missed.sum())
    return TrainingData(X, keys, segments, unlabelled)


def train(features: pd.DataFrame, data_sha256: str, params: Params) -> Trained:
    """Fit on the training window of ``features``; ``data_sha256`` names the source data."""
    return train_on(training_data(features, params), data_sha256, params)


def train_on(data: TrainingData, data_sha256: str, params: Params) -> Trained:
    """Fit on ``data`` (:func:`training_data`, :func:`read_training_data`)."""
    problem = params.problem
    cal = problem.calendar
    seg = problem.segment_column
    X, keys = data.X, data.keys
    cols = list(X.columns)
    logger.info(
        "training on %d rows x %d features (%d train rows without target left out)",
        len(X),
        len(cols),
        data.unlabelled,
    )
    fold = np.full(len(X), np.nan)
    model, report = fit_model(
        X,
        keys[TARGET],
        keys[T].to_numpy(),
        params.train,
        params.features.scale,
        LEVEL_FEATURE,
        threads=params.compute.threads,
        calendar=cal,
        fold_forecasts=fold,
    )
    # the chosen hyperparameters' forecast of every CV validation row (out of sample)
    search_cv = pd.DataFrame(
        {seg: keys[seg].astype(str).to_numpy(), T: keys[T].to_numpy(), "forecast": fold}
    )[~np.isnan(fold)]
    in_sample = predict_in_chunks(model, X, cols)
    card = model_card(model)
    metadata = {
        "model": card,
        "features": cols,
        "target": problem.target,
        "segment": seg,
        "training_window": {
            "start": params.windows.train_start,
            "end": params.windows.train_end,
            "rows": int(len(X)),
        },
        "data_sha256": data_sha256,
        "params": {"train": params.train.model_dump(), "features": params.features.model_dump()},
        "versions": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
            "skops": skops.__version__,
        },
    }
    target = keys[TARGET].to_numpy()
    train_mae = float(np.abs(in_sample - target).mean())
    metrics = {
        "train_rows": int(len(X)),
        "train_mae_in_sample": round(train_mae, 4),
        # what the deployed model really uses: configured values overridden by the search
        "chosen": chosen_hyperparameters(params.train.hyperparameters, report),
        **report,
    }
    if report["search"]:
        metrics["cv_mae"] = round(report["search"]["best_cv_mae"], 4)
        logger.info(
            "best CV MAE %s with %s",
            with_unit(report["search"]["best_cv_mae"], problem.unit),
            report["search"]["best_params"],
        )
    model_bytes = dumps_model(model)
    # ties the metadata to this very file: the stages that load the model check it
    metadata["sha256"] = hashlib.sha256(model_bytes).hexdigest()
    cv_mae = report["search"]["best_cv_mae"] if report["search"] else None
    if params.train.strategy == GLOBAL:
        manifest, files = global_manifest(
            data.segments, params.paths.model, metadata["sha256"], cv_mae
        )
        cv_frame = search_cv.assign(target=keys[TARGET].to_numpy()[~np.isnan(fold)])
    else:
        results, pooled = fit_segment_models(
            data.table, cols, model, metrics["chosen"], params, search_cv
        )
        manifest, files = build_manifest(
            results, params.train.strategy, params.paths.model, metadata["sha256"], cv_mae
        )
        if pooled:
            manifest["pooled"] = pooled
        cv_frame = chosen_cv_forecasts(results, seg)
        metrics["segment_models"] = {
            "strategy": params.train.strategy,
            "families": manifest["families"],
            "backend": params.train.engine.backend,
            **({"pooled": pooled} if pooled else {}),
        }
        logger.info(
            "%s: %d segments, models by family %s",
            params.train.strategy,
            manifest["segments"],
            manifest["families"],
        )
    metadata["segment_models"] = {
        "strategy": params.train.strategy,
        "families": manifest["families"],
    }
    # the drift reference holds the deployed models' in-sample forecasts: the drift stage
    # compares them with the same models' forecasts of the current window
    deployed_in_sample = in_sample
    if set(manifest["families"]) - {GLOBAL}:
        deployed_in_sample = routed_in_sample(data, cols, model, manifest, files, params)
        deployed_in_sample = np.where(np.isnan(deployed_in_sample), in_sample, deployed_in_sample)
    warmup = max(params.features.lags)
    steady = np.flatnonzero(steady_state(keys, seg, warmup).to_numpy())
    monitored, numeric, categorical = monitored_frame(
        X, cols, deployed_in_sample[steady], at=steady, target=target
    )
    logger.info(
        "drift reference: %d training rows past the %d-%s warm-up",
        len(steady),
        warmup,
        cal.unit,
    )
    reference = build_profile(monitored, numeric, categorical)
    del monitored
    cv_frame = (
        cv_frame[[seg, T, TARGET, "forecast"]]
        .sort_values([seg, T], kind="stable")
        .reset_index(drop=True)
    )
    metrics["cv_forecasts"] = cv_summary(cv_frame)
    files = {**files, CV_FORECASTS: parquet_bytes(cv_frame)}
    return Trained(model_bytes, metadata, reference, metrics, manifest, files)


def routed_in_sample(
    data: TrainingData,
    cols: list[str],
    model: object,
    manifest: dict,
    files: dict[str, bytes],
    params: Params,
) -> np.ndarray:
    """Each segment's deployed model's in-sample forecast of every training row of ``data``
    (in the order of ``data.X``; missing where a model has none, such as a series' first
    period)."""
    from ..modelling.model import loads_model
    from ..modelling.routing import Router

    problem = params.problem
    own = {
        str(e["segment"]): loads_model(files[e["file"]], str(e["file"]))
        for e in manifest["models"]
        if e["family"] == SKLEARN
    }
    router = Router(manifest, model, own, problem.calendar.season_length, problem.segment_column)
    table = data.table
    rows = (table[WINDOW] == "train").to_numpy() & table[TARGET].notna().to_numpy()
    return router.predict(table, cols, rows, fit_end=int(table.loc[rows, T].max()))


def chosen_cv_forecasts(results: list[SegmentResult], seg: str) -> pd.DataFrame:
    """The fold forecasts of each segment's chosen family (where it has them): the
    out-of-sample forecasts of the deployed choice inside the training window."""
    parts = []
    for r in results:
        pred = r.cv_preds.get(r.family)
        if pred is None or r.cv_t is None or not len(r.cv_t):
            continue
        parts.append(pd.DataFrame({seg: r.segment, T: r.cv_t, TARGET: r.cv_y, "forecast": pred}))
    if not parts:
        return pd.DataFrame({seg: [], T: [], TARGET: [], "forecast": []}).astype(
            {seg: object, T: np.int64, TARGET: float, "forecast": float}
        )
    return pd.concat(parts, ignore_index=True)


def cv_summary(frame: pd.DataFrame) -> dict:
    """The CV scores of the deployed choice over its fold rows (pooled: MAE, WAPE, RMSE)."""
    if not len(frame):
        return {"rows": 0}
    err = frame["forecast"].to_numpy() - frame[TARGET].to_numpy()
    total = float(np.abs(frame[TARGET].to_numpy()).sum())
    return {
        "rows": int(len(frame)),
        "mae": round(float(np.abs(err).mean()), 4),
        "wape": round(float(np.abs(err).sum() / total), 6) if total else None,
        "rmse": round(float(np.sqrt(np.mean(err**2))), 4),
    }


def fit_segment_models(
    features: pd.DataFrame,
    cols: list[str],
    model: object,
    chosen: dict,
    params: Params,
    search_cv: pd.DataFrame | None = None,
) -> tuple[list[SegmentResult], dict]:
    """Choose and fit every segment's own model on the training window (strategies
    ``per_segment``, ``best_of`` and ``pooled``), in chunks on the configured engine.

    ``search_cv`` (segment, period, forecast) holds the global model's fold forecasts
    from the search, when it ran; else they are computed here when a candidate needs
    them. Returns the results and, for ``pooled``, the report of the choice.
    """
    problem, spec = params.problem, params.train
    seg = problem.segment_column
    window = features[features[WINDOW] == "train"].sort_values([seg, T], kind="stable")
    labelled = window[window[TARGET].notna()]
    t_lab = labelled[T].to_numpy()
    splits = time_folds(t_lab, spec.search.folds, spec.search.fold_periods, problem.calendar)
    fold_starts = tuple(int(t_lab[val].min()) for _, val in splits)
    global_cv = None
    if search_cv is not None and len(search_cv):
        keyed = window[[seg, T]].astype({seg: str}).merge(search_cv, on=[seg, T], how="left")
        global_cv = pd.Series(keyed["forecast"].to_numpy(), index=window.index)
    elif spec.strategy in ("best_of", "pooled"):
        global_cv = global_fold_forecasts(window, labelled, cols, model, splits)
    own_cols = [c for c in cols if c != SEGMENT_FEATURE]
    need_x = "sklearn" in spec.per_segment.families
    data = []
    for name, part in window.groupby(seg, sort=True, observed=True):
        idx = part.index
        data.append(
            SegmentData(
                str(name),
                part[T].to_numpy(),
                part[TARGET].to_numpy(dtype=float),
                part[own_cols].reset_index(drop=True) if need_x else None,
                None if global_cv is None else global_cv.loc[idx].to_numpy(),
            )
        )
    cfg = ChunkConfig(
        strategy=spec.strategy,
        families=tuple(spec.per_segment.families),
        fold_starts=fold_starts,
        fold_periods=spec.search.fold_periods,
        season_length=problem.calendar.season_length,
        min_train_periods=spec.per_segment.min_train_periods,
        train=spec.model_dump(),
        hyperparameters=chosen,
        scale=params.features.scale,
        level_feature=LEVEL_FEATURE,
        ets_space=spec.per_segment.ets_space,
        combinations=spec.per_segment.combinations,
    )
    candidates = candidates_of(cfg.strategy, cfg.families, cfg.combinations)
    engine = spec.engine
    size = chunk_size(len(data), engine)
    logger.info(
        "%s: %d segments x %d candidate(s) (%s), %d time-ordered folds, chunks of %d on %s",
        spec.strategy,
        len(data),
        len(candidates),
        ", ".join(candidates),
        len(fold_starts),
        size,
        f"dask ({engine.workers} local workers or the given scheduler)"
        if engine.backend == "dask"
        else f"{engine.n_jobs} local process(es)",
    )
    results = run_chunks(fit_chunk, chunked(data, size), cfg, engine)
    if spec.strategy != "pooled":
        return results, {}
    return pooled_fit(results, data, candidates, cfg, engine)


def pooled_fit(
    results: list[SegmentResult],
    data: list[SegmentData],
    candidates: list[str],
    cfg: ChunkConfig,
    engine: object,
) -> tuple[list[SegmentResult], dict]:
    """The ``pooled`` choice from every segment's fold forecasts, then the chosen family
    fitted on each segment it could forecast (the others keep the global model)."""
    scores, scored = pooled_scores(results, candidates, cfg)
    chosen = choose_pooled(scores)
    report = {
        "chosen": chosen,
        "segments_scored": scored,
        "cv_mae": {c: None if v is None else round(v, 6) for c, v in scores.items()},
    }
    logger.info(
        "pooled CV MAE over %d segments: %s; chosen: %s",
        scored,
        ", ".join(f"{c} {v:.3f}" for c, v in scores.items() if v is not None),
        chosen,
    )
    eligible = {r.segment for r in results if chosen in r.cv_preds}
    fitted: dict[str, SegmentResult] = {}
    if chosen != GLOBAL:
        final_cfg = dataclasses.replace(
            cfg, strategy="per_segment", families=(chosen,), combinations=False
        )
        todo = [d for d in data if d.segment in eligible]
        if todo:
            size = chunk_size(len(todo), engine)
            for r in run_chunks(fit_chunk, chunked(todo, size), final_cfg, engine):
                fitted[r.segment] = r
    out = []
    for r in results:
        f = fitted.get(r.segment)
        if f is not None:
            family, candidate, note, model_bytes = f.family, f.candidate, f.note, f.model_bytes
        else:
            family, candidate, model_bytes = GLOBAL, {}, None
            note = r.note or (
                f"{chosen} could not forecast this segment's folds: keeps the global model"
                if chosen != GLOBAL
                else ""
            )
        out.append(
            dataclasses.replace(
                r,
                family=family,
                candidate=candidate,
                cv_mae=r.cv.get(family),
                note=note,
                model_bytes=model_bytes,
                cv_preds={k: v for k, v in r.cv_preds.items() if k == family},
            )
        )
    return out, report


def global_fold_forecasts(
    window: pd.DataFrame,
    labelled: pd.DataFrame,
    cols: list[str],
    model: object,
    splits: list,
) -> pd.Series:
    """The global model's forecast of each validation row of the CV folds, refitted on
    each fold's training part with the chosen hyperparameters (NaN outside the folds)."""
    from sklearn.base import clone

    out = pd.Series(np.nan, index=window.index)
    for train_idx, val_idx in splits:
        fitted = clone(model).fit(labelled[cols].iloc[train_idx], labelled[TARGET].iloc[train_idx])
        rows = labelled.iloc[val_idx]
        out.loc[rows.index] = fitted.predict(rows[cols])
    return out


def chosen_hyperparameters(configured: dict, report: dict) -> dict:
    """The configured hyperparameters with the search's choices applied on top."""
    chosen = dict(configured)
    if report.get("search"):
        chosen.update(report["search"]["best_params"])
    return chosen
