"""Many models: one per segment, chosen by time-ordered CV, fitted in parallel.

The strategies (``train.strategy``):

- ``global``: one model for every segment (the manifest routes every segment to it);
- ``per_segment``: each segment's own model, the best of ``train.per_segment.families`` by
  the CV below (segments too short for it keep the global model);
- ``best_of``: the same candidates plus the global model, whose fold forecasts are
  computed once for every segment;
- ``pooled``: one candidate for every segment (the global model or a family of
  ``train.per_segment.families``), the one with the lowest CV error over all segments'
  fold rows together (a segment that a candidate cannot forecast counts, and is
  deployed, with the global model's forecasts). A choice made once on thousands of rows
  is far less noisy than one per segment.

A family may be a combination (``global+theta``: the mean of its members' forecasts, see
:mod:`panelcast.modelling.statistical`); ``train.per_segment.combinations`` adds every
mean of two or more of the candidates' single statistical families (and of the global
model, for ``best_of`` and ``pooled``). Each member's fold forecasts are computed once per
segment and fold and shared by every combination that holds it.

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
import itertools
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
from .statistical import (
    STAT_FAMILIES,
    FittedStat,
    blend,
    combine_name,
    is_combination,
    members,
    select,
    stat_members,
    uses_global,
)

logger = logging.getLogger(__name__)

GLOBAL = "global"
SKLEARN = "sklearn"
#: The file of the segment models' directory holding the deployed choice's fold
#: forecasts (segment, period, target, forecast): what its intervals are calibrated on.
CV_FORECASTS = "cv_forecasts.parquet"
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
    combinations: bool = False


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
    #: the periods and targets of the segment's fold rows, and the fold forecasts of the
    #: chosen family on them (``pooled``: of every candidate that could forecast them)
    cv_t: np.ndarray | None = None
    cv_y: np.ndarray | None = None
    cv_preds: dict[str, np.ndarray] = field(default_factory=dict)


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


def period_grid(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A segment's values on every period from its first row's to its last (missing
    where it has no row): what a statistical model reads, one value per period."""
    t = np.asarray(t, dtype=np.int64)
    grid_t = np.arange(int(t.min()), int(t.max()) + 1, dtype=np.int64) if len(t) else t
    grid_y = np.full(len(grid_t), np.nan)
    grid_y[t - (grid_t[0] if len(t) else 0)] = y
    return grid_t, grid_y


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


def candidates_of(strategy: str, families: Iterable[str], combinations: bool = False) -> list[str]:
    """The candidate families of a strategy: ``global`` first (``best_of``, ``pooled``),
    the given families, then with ``combinations`` every mean of two or more of the
    single statistical families (and ``global``)."""
    with_global = strategy in ("best_of", "pooled")
    out = ([GLOBAL] if with_global else []) + list(families)
    if combinations:
        singles = ([GLOBAL] if with_global else []) + [f for f in families if f in STAT_FAMILIES]
        for size in range(2, len(singles) + 1):
            out += [combine_name(c) for c in itertools.combinations(singles, size)]
    return list(dict.fromkeys(out))


def _candidates(cfg: ChunkConfig) -> list[str]:
    return candidates_of(cfg.strategy, cfg.families, cfg.combinations)


def _member_forecast(
    member: str, seg: SegmentData, fold: tuple[np.ndarray, np.ndarray, int], cfg: ChunkConfig
) -> np.ndarray | None:
    """One member's forecasts of a fold's validation rows (None when it cannot fit)."""
    hist, val, start = fold
    labelled = ~np.isnan(seg.y)
    try:
        if member == GLOBAL:
            pred = seg.global_cv[val] if seg.global_cv is not None else None
        elif member == SKLEARN:
            rows = hist & labelled
            model = _sklearn_model(cfg, seg.X).fit(seg.X[rows], seg.y[rows])
            pred = np.asarray(model.predict(seg.X[val]), dtype=np.float64)
        else:  # on the segment's calendar: a period without a row is a gap, not skipped
            grid_t, grid_y = period_grid(seg.t, seg.y)
            hist_g, upto_g = grid_t < start, grid_t < start + cfg.fold_periods
            pred = _stat_fold_forecast(member, grid_y, hist_g, upto_g, cfg)
            pred = pred[seg.t[val] - grid_t[0]]
    except Exception as exc:  # a candidate that cannot fit this segment drops out
        logger.debug("segment %r: %s failed on a fold: %s", seg.segment, member, exc)
        return None
    if pred is None or np.isnan(pred).any():
        return None
    return pred


def combined(family: str, parts: dict[str, np.ndarray]) -> np.ndarray:
    """The forecast of ``family`` from its members' forecasts ``parts`` (the same
    arithmetic as :class:`FittedStat` and :func:`blend` at prediction time)."""
    stats = [parts[m] for m in stat_members(family)]
    if not stats:
        return parts[family]
    stat = stats[0] if len(stats) == 1 else np.mean(stats, axis=0)
    return blend(family, parts[GLOBAL], stat) if uses_global(family) else stat


def fit_segment(seg: SegmentData, cfg: ChunkConfig) -> SegmentResult:
    """Choose and fit one segment's model (see the module docstring); with ``pooled``,
    score every candidate on the folds and fit nothing (the choice is made over all
    segments, then :func:`fit_chunk` fits the chosen family)."""
    seg = _trim(seg)
    labelled = ~np.isnan(seg.y)
    n_train = int(labelled.sum())
    all_folds = _fold_masks(seg.t, labelled, cfg)
    in_folds = np.zeros(len(seg.t), dtype=bool)
    for _, val, _ in all_folds:
        in_folds |= val
    cv_t, cv_y = seg.t[in_folds], seg.y[in_folds]
    global_cv = (
        {GLOBAL: seg.global_cv[in_folds]}
        if seg.global_cv is not None and not np.isnan(seg.global_cv[in_folds]).any()
        else {}
    )

    def keeps_global(scores: dict[str, float | None], note: str) -> SegmentResult:
        """The result of this segment when it keeps the global model (``note``: why)."""
        return SegmentResult(
            seg.segment,
            GLOBAL,
            {},
            None,
            scores,
            n_train,
            note,
            cv_t=cv_t,
            cv_y=cv_y,
            cv_preds=global_cv,
        )

    if n_train < cfg.min_train_periods:
        return keeps_global(
            {},
            f"{n_train} labelled training periods < train.per_segment.min_train_periods "
            f"{cfg.min_train_periods}: keeps the global model",
        )
    candidates = _candidates(cfg)
    pooled = cfg.strategy == "pooled"
    # one candidate: nothing to choose, the CV is skipped (its score would change nothing)
    folds = all_folds if len(candidates) > 1 else []
    cache: dict[tuple[str, int], np.ndarray | None] = {}
    scores: dict[str, float | None] = {}
    preds: dict[str, np.ndarray] = {}
    if not folds and len(candidates) == 1:
        scores[candidates[0]] = None
    for family in candidates if folds else []:
        maes: list[float] | None = []
        full = np.full(len(seg.t), np.nan)
        for k, fold in enumerate(folds):
            parts = {}
            for member in members(family):
                if (member, k) not in cache:
                    cache[member, k] = _member_forecast(member, seg, fold, cfg)
                parts[member] = cache[member, k]
            if any(p is None for p in parts.values()):
                maes = None
                break
            pred = combined(family, parts)
            full[fold[1]] = pred
            maes.append(float(np.mean(np.abs(pred - seg.y[fold[1]]))))
        scores[family] = float(np.mean(maes)) if maes else None
        if maes:
            preds[family] = full[in_folds]
    if pooled:
        kept = {f: p for f, p in preds.items() if not np.isnan(p).any()}
        return SegmentResult(
            seg.segment, GLOBAL, {}, None, scores, n_train, cv_t=cv_t, cv_y=cv_y, cv_preds=kept
        )
    ranked = [(s, i, f) for i, (f, s) in enumerate(scores.items()) if s is not None]
    if not ranked and len(candidates) == 1:
        ranked = [(None, 0, candidates[0])]
    if not ranked:
        return keeps_global(scores, "no candidate could be scored")
    best_score, _, family = min(ranked)
    try:
        candidate, model_bytes = _final_fit(family, seg, labelled, cfg)
    except Exception as exc:  # the chosen candidate fails on the whole window: keep global
        note = f"{family} failed on the whole training window ({type(exc).__name__}: {exc})"
        logger.warning("segment %r: %s; it keeps the global model", seg.segment, note)
        return keeps_global(scores, note)
    chosen_cv = {family: preds[family]} if family in preds else {}
    return SegmentResult(
        seg.segment,
        family,
        candidate,
        best_score,
        scores,
        n_train,
        "",
        model_bytes,
        cv_t=cv_t,
        cv_y=cv_y,
        cv_preds=chosen_cv,
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
    if family in STAT_FAMILIES or is_combination(family):
        y = period_grid(seg.t, seg.y)[1]
        return select(family, y, cfg.season_length, cfg.ets_space), None
    return {}, None


def pooled_scores(
    results: Iterable[SegmentResult], candidates: list[str], cfg: ChunkConfig
) -> tuple[dict[str, float | None], int]:
    """Each candidate's CV MAE over every segment's fold rows together (the mean over
    folds of the fold's MAE, as the search scores), and the number of segments scored.

    A segment counts when the global model forecasts all its fold rows; where a
    candidate cannot forecast a segment, the global model's forecasts stand in for it
    (as they would in production: such a segment is deployed with the global model).
    """
    starts = np.asarray(cfg.fold_starts, dtype=np.int64)
    k = len(starts)
    sums = {c: np.zeros(k) for c in candidates}
    counts = np.zeros(k)
    scored = 0
    for r in results:
        if r.cv_t is None or GLOBAL not in r.cv_preds or not len(r.cv_t):
            continue
        fold = np.searchsorted(starts, r.cv_t, side="right") - 1
        counts += np.bincount(fold, minlength=k)
        scored += 1
        for c in candidates:
            pred = r.cv_preds.get(c, r.cv_preds[GLOBAL])
            sums[c] += np.bincount(fold, weights=np.abs(pred - r.cv_y), minlength=k)
    ok = counts > 0
    if not ok.any():
        return {c: None for c in candidates}, 0
    return {c: float(np.mean(sums[c][ok] / counts[ok])) for c in candidates}, scored


def choose_pooled(scores: dict[str, float | None]) -> str:
    """The candidate of lowest pooled score (the first on a tie; ``global`` when none
    could be scored)."""
    ranked = [(s, i, c) for i, (c, s) in enumerate(scores.items()) if s is not None]
    return min(ranked)[2] if ranked else GLOBAL


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
