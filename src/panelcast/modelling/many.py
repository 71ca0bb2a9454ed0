"""Many models: one per segment, chosen by time-ordered CV, fitted in parallel.

The strategies (``train.strategy``):

- ``global``: one model for every segment (the manifest routes every segment to it);
- ``per_segment``: each segment's own model, the best of ``train.per_segment.families`` by
  the CV below (segments too short for it keep the global model);
- ``best_of``: the same candidates plus the global model, whose fold forecasts are
  computed once for every segment.

The CV is the search's: the folds validate on ``fold_periods`` periods each, ending at the
last training period, so that every segment is compared on the same calendar; the score
is the unweighted mean over folds of the MAE, and on a tie the first candidate wins
(``global`` first). Only the training window is read: the test window decides nothing.

The work is cut in chunks of segments (:func:`fit_chunk`, a pure function of its
arguments) sent to joblib processes (``engine.backend: local``) or to a ``dask.distributed``
cluster (``dask``); each segment's result depends on its own data only, so the results are
identical bit for bit whatever the backend, the chunk size and the number of workers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ..core.config import EngineSpec, TrainSpec
from ..core.errors import UserError
from ..core.progress import Progress
from .statistical import STAT_FAMILIES, FittedStat, select

logger = logging.getLogger(__name__)

GLOBAL = "global"
SKLEARN = "sklearn"
#: The environment variable naming an existing Dask scheduler (``train.engine.scheduler``
#: wins over it).
DASK_ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"


@dataclass
class SegmentData:
    """One segment's training rows, sorted by period: ``t``, the target ``y`` (NaN when
    unlabelled), its feature rows ``X`` (for the scikit-learn family) and, for ``best_of``,
    the global model's fold forecast of each row ``global_cv`` (NaN outside the folds)."""

    segment: str
    t: np.ndarray
    y: np.ndarray
    X: pd.DataFrame | None = None
    global_cv: np.ndarray | None = None


@dataclass(frozen=True)
class ChunkConfig:
    """Everything a worker needs besides the data (small, sent with every chunk)."""

    strategy: str
    families: tuple[str, ...]
    fold_starts: tuple[int, ...]
    fold_periods: int
    season_length: int
    min_train_periods: int
    train: dict[str, Any] = field(default_factory=dict)  # TrainSpec.model_dump()
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    scale: str = "log_ratio"
    level_feature: str = "log_level"
    ets_space: str = "ZZZ"


@dataclass
class SegmentResult:
    """The choice for one segment: the family, the candidate's specification, the CV
    score of every candidate, and the model file's bytes (scikit-learn family only)."""

    segment: str
    family: str
    candidate: dict[str, Any]
    cv_mae: float | None
    cv: dict[str, float | None]
    train_periods: int
    note: str = ""
    model_bytes: bytes | None = None


# --------------------------------------------------------------------------- one segment


def _fold_masks(
    t: np.ndarray, labelled: np.ndarray, cfg: ChunkConfig
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(history mask, validation mask, fold start) of each fold this segment takes part
    in: enough labelled history before it (two seasons, at least 4) and a labelled
    validation row."""
    need = max(2 * cfg.season_length, 4)
    out = []
    for start in cfg.fold_starts:
        hist = t < start
        val = (t >= start) & (t < start + cfg.fold_periods) & labelled
        if int((hist & labelled).sum()) >= need and val.any():
            out.append((hist, val, start))
    return out


def _trim(seg: SegmentData) -> SegmentData:
    """The segment from its first labelled period on (statistical models start there)."""
    labelled = ~np.isnan(seg.y)
    first = int(np.argmax(labelled)) if labelled.any() else len(seg.y)
    if first == 0:
        return seg
    return SegmentData(
        seg.segment,
        seg.t[first:],
        seg.y[first:],
        None if seg.X is None else seg.X.iloc[first:],
        None if seg.global_cv is None else seg.global_cv[first:],
    )


def _stat_fold_forecast(
    family: str, y: np.ndarray, hist: np.ndarray, upto: np.ndarray, cfg: ChunkConfig
) -> np.ndarray:
    """One-step forecasts of the rows ``upto`` by ``family`` selected and fitted on
    ``hist`` (a prefix of the series) only."""
    m = cfg.season_length
    spec = select(family, y[hist], m, cfg.ets_space)
    pred, _ = FittedStat(family, spec, y[hist], m).one_step(y[upto])
    return pred


def _sklearn_model(cfg: ChunkConfig, X: pd.DataFrame) -> Any:
    from .model import LevelRatioRegressor, make_estimator

    spec = TrainSpec.model_validate(
        {**cfg.train, "hyperparameters": cfg.hyperparameters, "strategy": "global"}
    )
    categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    numeric = [c for c in X.columns if c not in categorical]
    return LevelRatioRegressor(
        make_estimator(spec, categorical, numeric), cfg.level_feature, cfg.scale
    )


def _candidates(cfg: ChunkConfig) -> list[str]:
    return ([GLOBAL] if cfg.strategy == "best_of" else []) + list(cfg.families)


def fit_segment(seg: SegmentData, cfg: ChunkConfig) -> SegmentResult:
    """Choose and fit one segment's model (see the module docstring)."""
    seg = _trim(seg)
    labelled = ~np.isnan(seg.y)
    n_train = int(labelled.sum())
    if n_train < cfg.min_train_periods:
        return SegmentResult(
            seg.segment,
            GLOBAL,
            {},
            None,
            {},
            n_train,
            f"{n_train} labelled training periods < train.per_segment.min_train_periods "
            f"{cfg.min_train_periods}: keeps the global model",
        )
    candidates = _candidates(cfg)
    # one candidate: nothing to choose, the CV is skipped (its score would change nothing)
    folds = _fold_masks(seg.t, labelled, cfg) if len(candidates) > 1 else []
    scores: dict[str, float | None] = {}
    if not folds and len(candidates) == 1:
        scores[candidates[0]] = None
    for family in candidates if folds else []:
        maes = []
        for hist, val, start in folds:
            try:
                if family == GLOBAL:
                    pred = seg.global_cv[val] if seg.global_cv is not None else None
                elif family == SKLEARN:
                    rows = hist & labelled
                    model = _sklearn_model(cfg, seg.X).fit(seg.X[rows], seg.y[rows])
                    pred = model.predict(seg.X[val])
                else:
                    upto = seg.t < start + cfg.fold_periods
                    pred = _stat_fold_forecast(family, seg.y, hist, upto, cfg)[val[upto]]
            except Exception as exc:  # a candidate that cannot fit this segment drops out
                logger.debug("segment %r: %s failed on a fold: %s", seg.segment, family, exc)
                pred = None
            if pred is None or np.isnan(pred).any():
                maes = None
                break
            maes.append(float(np.mean(np.abs(pred - seg.y[val]))))
        scores[family] = float(np.mean(maes)) if maes else None
    ranked = [(s, i, f) for i, (f, s) in enumerate(scores.items()) if s is not None]
    if not ranked and len(candidates) == 1:
        ranked = [(None, 0, candidates[0])]
    if not ranked:
        return SegmentResult(
            seg.segment, GLOBAL, {}, None, scores, n_train, "no candidate could be scored"
        )
    best_score, _, family = min(ranked)
    try:
        candidate, model_bytes = _final_fit(family, seg, labelled, cfg)
    except Exception as exc:  # the chosen candidate fails on the whole window: keep global
        note = f"{family} failed on the whole training window ({type(exc).__name__}: {exc})"
        logger.warning("segment %r: %s; it keeps the global model", seg.segment, note)
        return SegmentResult(seg.segment, GLOBAL, {}, None, scores, n_train, note)
    return SegmentResult(
        seg.segment, family, candidate, best_score, scores, n_train, "", model_bytes
    )


def _final_fit(
    family: str, seg: SegmentData, labelled: np.ndarray, cfg: ChunkConfig
) -> tuple[dict[str, Any], bytes | None]:
    """The chosen family fitted on the segment's whole training window: its candidate
    (hyperparameters or statistical specification) and, for scikit-learn, the file bytes."""
    if family == SKLEARN:
        from .model import dumps_model

        model = _sklearn_model(cfg, seg.X).fit(seg.X[labelled], seg.y[labelled])
        return dict(cfg.hyperparameters), dumps_model(model)
    if family in STAT_FAMILIES:
        return select(family, seg.y, cfg.season_length, cfg.ets_space), None
    return {}, None


def fit_chunk(chunk: list[SegmentData], cfg: ChunkConfig) -> list[SegmentResult]:
    """Fit every segment of ``chunk`` (runs in a worker: one thread per process)."""
    with threadpool_limits(limits=1):
        return [fit_segment(seg, cfg) for seg in chunk]


# --------------------------------------------------------------------------- the engine


def chunk_size(n_items: int, engine: EngineSpec) -> int:
    """Segments per task: ``engine.chunk_segments``, made smaller when that would leave
    workers idle (at least 4 tasks per worker, so that uneven chunks even out)."""
    workers = engine.workers if engine.backend == "dask" else engine.n_jobs
    if workers == -1:
        workers = os.cpu_count() or 1
    if workers <= 1:
        return engine.chunk_segments
    return max(1, min(engine.chunk_segments, -(-n_items // (4 * workers))))


def chunked(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive chunks of ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_chunks(
    fn: Callable[[Any, Any], list[Any]],
    chunks: list[Any],
    shared: Any,
    engine: EngineSpec,
    what: str = "per-segment models",
    sizes: list[int] | None = None,
) -> list[Any]:
    """``fn(chunk, shared)`` for every chunk on the configured backend, the results
    concatenated in the order of ``chunks``, with progress (done, rate, time left)."""
    sizes = sizes or [len(c) for c in chunks]
    total = sum(sizes)
    progress = Progress(what, total, "segments", log=logger)
    started = time.perf_counter()
    results: list[list[Any] | None] = [None] * len(chunks)
    done = 0
    for index, result in _execute(fn, chunks, shared, engine):
        results[index] = result
        done += sizes[index]
        rate = done / max(time.perf_counter() - started, 1e-9)
        progress.update(done, f"{rate:.1f} segments/s")
    return [r for chunk in results for r in chunk]  # type: ignore[union-attr]


def _execute(
    fn: Callable, chunks: list[Any], shared: Any, engine: EngineSpec
) -> Iterator[tuple[int, Any]]:
    if engine.backend == "dask":
        yield from _execute_dask(fn, chunks, shared, engine)
        return
    if engine.n_jobs == 1 or len(chunks) <= 1:
        for i, chunk in enumerate(chunks):
            yield i, fn(chunk, shared)
        return
    from joblib import Parallel, delayed, parallel_config

    with parallel_config(backend="loky", inner_max_num_threads=1):
        out = Parallel(n_jobs=engine.n_jobs, return_as="generator")(
            delayed(fn)(chunk, shared) for chunk in chunks
        )
        yield from enumerate(out)


def dask_address(engine: EngineSpec) -> str | None:
    """The scheduler to use: ``train.engine.scheduler``, else ``DASK_SCHEDULER_ADDRESS``,
    else none (a LocalCluster is started)."""
    return engine.scheduler or os.environ.get(DASK_ADDRESS_ENV) or None


def local_cluster(workers: int) -> Any:
    """A LocalCluster on 127.0.0.1: ``workers`` processes of one thread each, dashboard
    off, BLAS/OpenMP pinned to one thread in every worker."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        worker_dashboard_address=None,
        env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )


def _execute_dask(
    fn: Callable, chunks: list[Any], shared: Any, engine: EngineSpec
) -> Iterator[tuple[int, Any]]:
    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - in the lock file
        raise UserError(
            f"params key 'train.engine.backend': dask needs the distributed package ({exc})."
        ) from None
    address = dask_address(engine)
    cluster = None if address else local_cluster(engine.workers)
    try:
        client = Client(address or cluster, timeout=f"{engine.connect_timeout_s}s")
    except OSError as exc:
        raise UserError(
            f"params key 'train.engine.scheduler' (or ${DASK_ADDRESS_ENV}): cannot reach the "
            f"Dask scheduler {address!r}: {exc}; expected the address of a running "
            f"scheduler such as tcp://127.0.0.1:8786, or none to start a LocalCluster."
        ) from None
    try:
        logger.info(
            "dask: %s, %d worker(s)",
            address or "LocalCluster on 127.0.0.1",
            len(client.scheduler_info()["workers"]),
        )
        shared_future = client.scatter([shared], broadcast=True, hash=False)[0]
        index = {}
        futures = []
        for i, chunk in enumerate(chunks):
            # the chunk as one object, straight to a worker (not through the scheduler)
            data = client.scatter([chunk], hash=False)[0]
            fut = client.submit(fn, data, shared_future, pure=False)
            index[fut.key] = i
            futures.append(fut)
        for fut in as_completed(futures):
            yield index[fut.key], fut.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# --------------------------------------------------------------------------- the manifest


def segment_file(family: str, position: int) -> str:
    """The model file of the ``position``-th segment (in manifest order) of a family."""
    return f"{family}/{position:06d}.skops"


def build_manifest(
    results: Iterable[SegmentResult],
    strategy: str,
    global_file: str,
    global_sha256: str,
    global_cv_mae: float | None,
) -> tuple[dict, dict[str, bytes]]:
    """The manifest (one entry per segment) and the per-segment model files to write.

    Entries name the segment, the family, the chosen candidate (hyperparameters or the
    statistical specification), the CV scores, and the model file with its sha256:
    the global model's file for ``global``, no file for a statistical model (its
    specification is the model: see :mod:`panelcast.modelling.statistical`).
    """
    files: dict[str, bytes] = {}
    entries = []
    for position, r in enumerate(sorted(results, key=lambda r: r.segment)):
        entry: dict[str, Any] = {
            "segment": r.segment,
            "family": r.family,
            "candidate": r.candidate,
            "cv_mae": _round(r.cv_mae),
            "cv": {k: _round(v) for k, v in r.cv.items()},
            "train_periods": r.train_periods,
        }
        if r.note:
            entry["note"] = r.note
        if r.family == GLOBAL:
            entry.update(file=global_file, sha256=global_sha256)
        elif r.model_bytes is not None:
            name = segment_file(r.family, position)
            files[name] = r.model_bytes
            entry.update(file=name, sha256=hashlib.sha256(r.model_bytes).hexdigest())
        else:
            entry.update(file=None, sha256=None)
        entries.append(entry)
    families = pd.Series([e["family"] for e in entries], dtype=object).value_counts()
    manifest = {
        "strategy": strategy,
        "segments": len(entries),
        "families": {str(k): int(v) for k, v in sorted(families.items())},
        "global_cv_mae": _round(global_cv_mae),
        "models": entries,
    }
    return manifest, files


def global_manifest(
    segments: Iterable[str], global_file: str, global_sha256: str, cv_mae: float | None
) -> tuple[dict, dict[str, bytes]]:
    """The manifest of the ``global`` strategy: every segment routed to the global model."""
    results = [SegmentResult(str(s), GLOBAL, {}, None, {}, 0) for s in segments]
    manifest, files = build_manifest(results, GLOBAL, global_file, global_sha256, cv_mae)
    for entry in manifest["models"]:
        del entry["cv"], entry["train_periods"]
    return manifest, files


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)
