"""The HTTP service (FastAPI): the deployed model, loaded once, answering forecasts.

Routes (Open Inference Protocol v2 where it has one):

- ``GET /v2/health/live``, ``GET /v2/health/ready`` (200 once the model is loaded and
  has forecast once; it names the segment column), ``GET /v2/models/panelcast`` (version,
  training window, gate, features, input schema, interval levels, the segment column, the
  time axis and its frequency, the target's label and unit, and ``segment_models``: the
  strategy and the number of segments per model family; ``?segment=NAME`` (repeatable)
  adds the family of those segments, ``?segment=*`` of every segment),
  ``GET /v2/models/panelcast/ready``;
- ``POST /predict`` (``rows`` in the source schema and/or ``segments``) and
  ``POST /v2/models/panelcast/infer`` (named columns): each segment's next-period
  forecast with its interval bounds and the model version, the same digits as
  ``panelcast predict`` (both read :mod:`panelcast.serving.protocol`); when the
  deployment routes some segment to a model of its own, each forecast also names its
  model's ``family``;
- ``GET /forecasts/{segment}``: the predict stage's batch forecast of a segment (a single
  series is named after its target);
- ``GET /metrics`` (Prometheus text), ``POST /admin/reload`` (loopback clients only).

A request's rows are checked with the data contract and forecast through the
forecaster's fast path; concurrent small requests wait up to ``serve.batch_window_ms``
(or until ``serve.batch_max_rows`` segments wait) and share one model evaluation. A
larger request is answered in a worker thread so the others keep flowing.

Hot reload: the service watches the deployed files (``paths.deployed_model``,
``deployed_metadata``, ``serving_state``, ``forecasts``, and in ``deployed_segments``
the manifest, the series and the folders of the model files); when they change (and stay
unchanged for one more poll) it loads the new model fully in a thread, checks it like
at start-up, forecasts once, then swaps one reference: a request in flight finishes on
the model it started with, none fails. A new model that does not load is refused and
logged; the old one keeps serving. ``SIGHUP`` and ``POST /admin/reload`` check at once.

Every request is logged as one JSON line (logger ``panelcast.access``: method, path,
status, duration, model version) and counted in :mod:`panelcast.serving.metrics`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.config import Params
from .fastpath import FAMILY, Forecasts, Prepared, as_float_list
from .forecaster import Forecaster, RequestRowsError, UnknownSegmentError
from .loading import Loaded, file_signature, load_bundle
from .metrics import Metrics
from .protocol import (
    BYTES_PER_ROW,
    CONTRACT_DATATYPE,
    ClientError,
    contract_details,
    detail,
    dumps,
    infer_request,
    parse_json,
    predict_request,
    records_frame,
    show,
)

logger = logging.getLogger("panelcast.serving")
access_logger = logging.getLogger("panelcast.access")

#: Seconds between two looks at the deployed files (``PANELCAST_RELOAD_POLL``; 0: do not
#: watch, reload only on SIGHUP or ``POST /admin/reload``).
POLL_SECONDS = 0.25
JSON = "application/json"
LOOPBACK = ("127.", "::1", "localhost")


# --------------------------------------------------------------------------- batching


class Batcher:
    """Concurrent small requests share one model evaluation.

    A batch is evaluated as soon as no other forecast request is on its way (every request
    that has arrived in the worker has joined it: nothing to wait for), after at most
    ``window`` seconds when some are still being read, or at once when ``max_rows``
    segments wait. Under load the requests that arrived together share one model call;
    alone, a request never waits for the window. Requests of different models (during a
    reload) are evaluated separately.
    """

    def __init__(self, window: float, max_rows: int, metrics: Metrics):
        self.window, self.max_rows, self.metrics = window, max_rows, metrics
        self.pending: list[tuple[Any, Prepared, asyncio.Future]] = []
        self.rows = 0
        self.arriving = 0  # forecast requests received but not yet in the batch
        self.timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self.soon = False

    def arrive(self) -> list[bool]:
        """A forecast request started: the batch may wait for it (returns its ticket)."""
        self.arriving += 1
        return [True]

    def depart(self, ticket: list[bool] | None) -> None:
        """The request is done without joining a batch (an error, a large request)."""
        if ticket and ticket[0]:
            ticket[0] = False
            self.arriving -= 1
            if self.pending and self.arriving == 0:
                self._flush_soon()

    def submit(self, fast: Any, prep: Prepared, ticket: list[bool] | None = None) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if ticket and ticket[0]:
            ticket[0] = False
            self.arriving -= 1
        self.pending.append((fast, prep, future))
        self.rows += len(prep)
        if self.rows >= self.max_rows:
            self.flush()
        elif self.arriving <= 0 or self.window <= 0:
            self._flush_soon()  # after the requests already read in this loop turn
        elif self.timer is None:
            self.timer = loop.call_later(self.window, self.flush)
        return future

    def _flush_soon(self) -> None:
        if not self.soon:
            if self.timer is not None:
                self.timer.cancel()
            self.soon = True
            self.timer = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.soon = False
        pending, self.pending, self.rows = self.pending, [], 0
        groups: dict[int, tuple[Any, list]] = {}
        for fast, prep, future in pending:
            if not future.cancelled():
                groups.setdefault(id(fast), (fast, []))[1].append((prep, future))
        for fast, items in groups.values():
            try:
                results = fast.forecast_many([prep for prep, _ in items])
            except Exception as exc:  # a bug: every waiting request learns it
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.metrics.model_call(sum(len(prep) for prep, _ in items))
            for (_, future), result in zip(items, results, strict=True):
                if not future.done():
                    future.set_result(result)


# --------------------------------------------------------------------------- service


class Service:
    """The loaded model, its reloads, and the request logic shared by the routes."""

    def __init__(
        self,
        params: Params,
        allow_failed_gate: bool = False,
        loaded: Loaded | None = None,
        metrics: Metrics | None = None,
    ):
        self.params = params
        self.allow_failed_gate = allow_failed_gate
        self.current = loaded
        self.metrics = metrics or Metrics(1)
        spec = params.serve
        self.max_rows = spec.max_rows
        self.max_bytes = spec.max_rows * BYTES_PER_ROW + 2**20
        self.batcher = Batcher(spec.batch_window_ms / 1000, spec.batch_max_rows, self.metrics)
        self.batch_max_rows = spec.batch_max_rows
        self.ready = False
        self._lock: asyncio.Lock | None = None
        self._failed: tuple | None = None
        self._watcher: asyncio.Task | None = None

    @property
    def version(self) -> str:
        return self.current.version if self.current else ""

    async def start(self) -> None:
        self._lock = asyncio.Lock()
        if self.current is None:
            self.current = await asyncio.to_thread(load_bundle, self.params, self.allow_failed_gate)
        self.metrics.loaded(self.version, reload=False)
        if file_signature(self.params) != self.current.signature:
            await self.reload()  # a worker started late (a replacement): catch up first
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (an in-process test client): no signal handling
        self._watcher = asyncio.ensure_future(self._watch())
        self.ready = True
        logger.info(
            "worker %d ready: model %s (%d segments, %s model, loaded in %.2f s)",
            self.metrics.worker,
            self.version,
            len(self.current.forecaster.segments),
            "compiled" if self.current.compiled else "scikit-learn",
            self.current.seconds,
        )

    async def stop(self) -> None:
        self.ready = False
        if self._watcher is not None:
            self._watcher.cancel()

    async def _watch(self) -> None:
        poll = float(os.environ.get("PANELCAST_RELOAD_POLL", POLL_SECONDS))
        if poll <= 0:
            return
        while True:
            await asyncio.sleep(poll)
            try:
                seen = file_signature(self.params)
                if seen == self.current.signature or seen == self._failed:
                    continue
                await asyncio.sleep(poll)  # let a copy in progress finish
                if file_signature(self.params) == seen:
                    await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the watcher die
                logger.exception("watching the deployed files failed; trying again")

    async def reload(self, force: bool = False) -> tuple[int, dict]:
        """Load the deployed files if they changed; swap only a model that loads."""
        assert self._lock is not None
        async with self._lock:
            old = self.current
            seen = file_signature(self.params)
            if seen == old.signature and not force:
                return 200, {"reloaded": False, "model_version": old.version}
            try:
                new = await asyncio.to_thread(load_bundle, self.params, self.allow_failed_gate)
            except Exception as exc:
                self._failed = seen
                self.metrics.reload_failed()
                logger.error(
                    "refused the new deployed model (%s); still serving model %s",
                    exc,
                    old.version,
                )
                return 409, {
                    "error": f"the new deployed model was refused: {exc}",
                    "reloaded": False,
                    "model_version": old.version,
                }
            if new.signature != file_signature(self.params):
                # the files changed while loading: the watcher loads them again
                logger.info("the deployed files changed while loading; loading them again")
                return 409, {
                    "error": "the deployed files changed while loading; try again",
                    "reloaded": False,
                    "model_version": old.version,
                }
            self.current = new
            self._failed = None
            self.metrics.loaded(new.version, reload=True)
            logger.info(
                "worker %d switched model %s -> %s (loaded in %.2f s)",
                self.metrics.worker,
                old.version,
                new.version,
                new.seconds,
            )
            return 200, {
                "reloaded": True,
                "previous_version": old.version,
                "model_version": new.version,
            }

    # ------------------------------------------------------------------ requests

    def prepare(self, fc: Forecaster, rows: list[dict], segments: list[str]) -> Prepared:
        """Check the request and merge it over the stored history (client errors raised)."""
        fast = fc.fast
        arrays = None
        if rows:
            arrays = fast.rows_from_records(rows)
            if arrays is None:  # not plainly valid: the data contract says what is wrong
                try:
                    frame = fc.validate_rows(records_frame(rows))
                except UnknownSegmentError as exc:
                    raise ClientError(
                        404, str(exc), [detail(fc.segment, "known_segment", exc.segments)]
                    ) from None
                except RequestRowsError as exc:
                    raise ClientError(422, str(exc), contract_details(exc.failures)) from None
                except Exception as exc:  # the contract's check failed on these rows
                    logger.warning(
                        "the data contract check failed on request rows (%s: %s)",
                        type(exc).__name__,
                        show(str(exc)),
                    )
                    raise ClientError(
                        422,
                        "the rows could not be checked against the data contract "
                        f"({type(exc).__name__}: {show(str(exc))}); check types and missing keys.",
                        [detail("rows", "contract", None, show(str(exc)))],
                    ) from None
                arrays = fast.rows_from_frame(frame)
        unknown = [s for s in segments if s not in fast.index]
        if unknown:
            error = UnknownSegmentError(sorted(set(unknown)), fc.segments)
            raise ClientError(404, str(error), [detail("segments", "known_segment", unknown)])
        return fast.prepare(arrays, [fast.index[s] for s in segments])

    def _forecast_now(self, fc: Forecaster, rows: list[dict], segments: list[str]) -> Forecasts:
        prep = self.prepare(fc, rows, segments)
        result = fc.fast.forecast_many([prep])[0]
        self.metrics.model_call(len(prep))
        return result

    async def forecast(
        self, loaded: Loaded, rows: list[dict], segments: list[str], ticket: list | None = None
    ) -> Forecasts:
        fc = loaded.forecaster
        if len(rows) + len(segments) > self.batch_max_rows:
            self.batcher.depart(ticket)
            return await asyncio.to_thread(self._forecast_now, fc, rows, segments)
        return await self.batcher.submit(fc.fast, self.prepare(fc, rows, segments), ticket)


# --------------------------------------------------------------------------- HTTP


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) above ``limit`` bytes before it is read or parsed."""
    length = request.headers.get("content-length")
    if length is not None:
        check_content_length(length, limit)
        return await request.body()
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise body_too_large(limit, total)
        chunks.append(chunk)
    return b"".join(chunks)


def check_content_length(length: str, limit: int) -> None:
    """Refuse a Content-Length that is not a number (400) or above ``limit`` bytes (413)."""
    if not length.isdigit():
        raise ClientError(
            400, "invalid Content-Length header.", [detail("Content-Length", "integer", length)]
        )
    if int(length) > limit:
        raise ClientError(
            413,
            f"the body has {int(length)} bytes; the service takes at most {limit} "
            f"(serve.max_rows rows).",
            [detail("Content-Length", "max_bytes", int(length))],
        )


def body_too_large(limit: int, total: int) -> ClientError:
    """The 413 of a streamed body that passed ``limit`` bytes."""
    return ClientError(
        413,
        f"the body exceeds {limit} bytes (serve.max_rows rows).",
        [detail("body", "max_bytes", total)],
    )


async def receive_body(scope: dict, receive: Any, limit: int) -> bytes | None:
    """The body from the ASGI messages, refused (413) above ``limit`` bytes: at once from
    its Content-Length, else as soon as the streamed chunks pass it. None: the client left."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            check_content_length(value.decode(errors="replace"), limit)
            break
    chunks, total = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise body_too_large(limit, total)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def answer_predict(
    service: Service, body: bytes, ticket: list | None = None
) -> tuple[int, bytes, str]:
    """``POST /predict``: status, JSON body and the version of the model that answered."""
    loaded = service.current
    try:
        rows, segments = predict_request(parse_json(body), service.max_rows)
        result = await service.forecast(loaded, rows, segments, ticket)
    except ClientError as exc:
        return exc.status, exc.body(), loaded.version
    payload = {
        "model_name": "panelcast",
        "model_version": loaded.version,
        "forecasts": forecast_records(result, service.params.problem.segment_column),
    }
    return 200, dumps(payload), loaded.version


async def answer_infer(
    service: Service, body: bytes, ticket: list | None = None
) -> tuple[int, bytes, str]:
    """``POST /v2/models/panelcast/infer`` (Open Inference Protocol v2)."""
    loaded = service.current
    seg = service.params.problem.segment_column
    try:
        rows, segments, rid = infer_request(parse_json(body), service.max_rows, seg)
        result = await service.forecast(loaded, rows, segments, ticket)
    except ClientError as exc:
        return exc.status, exc.body(), loaded.version
    payload = {
        "model_name": "panelcast",
        "model_version": loaded.version,
        "id": rid if rid is not None else uuid.uuid4().hex,
        "parameters": {"content_type": "pd"},
        "outputs": infer_outputs(result, seg),
    }
    return 200, dumps(payload), loaded.version


async def _routed(request: Request, service: Service, answer: Any) -> Response:
    """A forecast route through FastAPI (the middleware's fast lane answers the same)."""
    ticket = service.batcher.arrive()
    try:
        body = await read_body(request, service.max_bytes)
        status, payload, version = await answer(service, body, ticket)
    except ClientError as exc:
        return error_response(exc)
    finally:
        service.batcher.depart(ticket)
    request.scope["panelcast.version"] = version
    return Response(payload, status_code=status, media_type=JSON)


def error_response(error: ClientError) -> Response:
    return Response(error.body(), status_code=error.status, media_type=JSON)


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type=JSON)


def forecast_records(result: Forecasts, segment: str) -> list[dict]:
    columns = {"forecast": as_float_list(result.forecast)}
    columns.update({k: as_float_list(v) for k, v in result.bounds.items()})
    if result.families is not None:
        columns[FAMILY] = result.families
    names = list(columns)
    values = list(zip(*columns.values(), strict=True)) if names else []
    return [
        {segment: s, "period": p, **dict(zip(names, v, strict=True))}
        for s, p, v in zip(result.segments, result.periods, values, strict=True)
    ]


def infer_outputs(result: Forecasts, segment: str) -> list[dict]:
    n = len(result.segments)
    outputs = [
        {"name": segment, "datatype": "BYTES", "shape": [n], "data": result.segments},
        {"name": "period", "datatype": "BYTES", "shape": [n], "data": result.periods},
        {
            "name": "forecast",
            "datatype": "FP64",
            "shape": [n],
            "data": as_float_list(result.forecast),
        },
    ]
    for name, values in result.bounds.items():
        outputs.append(
            {"name": name, "datatype": "FP64", "shape": [n], "data": as_float_list(values)}
        )
    if result.families is not None:
        outputs.append({"name": FAMILY, "datatype": "BYTES", "shape": [n], "data": result.families})
    return outputs


def segment_models(fc: Forecaster, segments: list[str] | None = None) -> dict:
    """The strategy and the segments per family of the deployment; with ``segments``
    (``["*"]``: all), the family of each of them (an unknown one is a 404)."""
    meta = fc.metadata.get("segment_models") or {}
    own = fc.segment_models
    manifest = own.manifest if own is not None else {}
    out = {
        "strategy": manifest.get("strategy", meta.get("strategy", "global")),
        "families": manifest.get("families", meta.get("families", {"global": len(fc.segments)})),
    }
    if segments:
        names = fc.segments if segments == ["*"] else segments
        unknown = sorted(set(names) - fc.segment_set)
        if unknown:
            error = UnknownSegmentError(unknown, fc.segments)
            raise ClientError(404, str(error), [detail("segment", "known_segment", unknown)])
        out["segments"] = {name: fc.family(name) for name in names}
    return out


def model_metadata(loaded: Loaded, segments: list[str] | None = None) -> dict:
    fc = loaded.forecaster
    meta = fc.metadata
    rules = fc.contract.columns
    inputs = [
        {
            "name": c,
            "datatype": CONTRACT_DATATYPE.get(rules[c].type, "BYTES") if c in rules else "BYTES",
            "shape": [-1],
            "nullable": bool(rules[c].nullable) if c in rules else True,
        }
        for c in meta["input_schema"]
    ]
    outputs = [{"name": fc.segment, "datatype": "BYTES", "shape": [-1]}]
    outputs.append({"name": "period", "datatype": "BYTES", "shape": [-1]})
    outputs += [
        {"name": n, "datatype": "FP64", "shape": [-1]} for n in ["forecast", *fc.fast.bound_names]
    ]
    if fc.routed:
        outputs.append({"name": FAMILY, "datatype": "BYTES", "shape": [-1]})
    problem = fc.params.problem
    time_spec = problem.time
    return {
        "name": meta.get("name", "panelcast"),
        "versions": [fc.version],
        "platform": "scikit-learn",
        "inputs": inputs,
        "outputs": outputs,
        "model_version": fc.version,
        "sha256": meta.get("sha256"),
        "training_window": meta.get("training_window"),
        "last_period": meta.get("last_period"),
        "gate": meta.get("gate"),
        "features": meta.get("features"),
        "input_schema": meta.get("input_schema"),
        "segment": fc.segment,
        "single_series": problem.single_series,
        "segments": len(fc.segments),
        "target": meta.get("target"),
        "target_label": problem.label,
        "unit": problem.unit,
        "time": {
            "frequency": time_spec.frequency,
            "unit": problem.calendar.unit,
            "columns": list(time_spec.columns),
            "format": time_spec.format,
            "season_length": problem.calendar.season_length,
        },
        "interval_levels": meta.get("interval_levels"),
        "refit": meta.get("refit"),
        "data_sha256": meta.get("data_sha256"),
        "compiled": loaded.compiled,
        "segment_models": segment_models(fc, segments),
    }


class Observe:
    """ASGI middleware: one JSON access-log line and the metrics of every request; a bug
    becomes a logged 500 with a JSON body. The two forecast routes are answered here
    directly (a fast lane past FastAPI's routing; the FastAPI routes call the same
    functions)."""

    def __init__(self, app: Any, service: Service):
        self.app, self.service = app, service
        self.fast_lane = {"/predict": answer_predict, "/v2/models/panelcast/infer": answer_infer}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answer = self.fast_lane.get(scope["path"]) if scope["method"] == "POST" else None
        if answer is not None:
            status = await self._answer(scope, receive, send, answer)
            self._record(scope, status, time.perf_counter() - started)
            return
        state = {"status": 500, "sent": False}

        async def send_observed(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["sent"] = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            logger.exception(
                "unhandled error answering %s %s", scope["method"], scope["path"][:200]
            )
            if not state["sent"]:
                body = dumps({"error": "internal error (logged)", "status": 500})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
            state["status"] = 500
        self._record(scope, state["status"], time.perf_counter() - started)

    async def _answer(self, scope: dict, receive: Any, send: Any, answer: Any) -> int:
        """The forecast routes without FastAPI's routing and request objects: the same
        answer functions, a third less time per request (measured)."""
        service = self.service
        ticket = service.batcher.arrive()
        try:
            try:
                body = await receive_body(scope, receive, service.max_bytes)
            except ClientError as exc:
                status, payload = exc.status, exc.body()
            else:
                if body is None:  # the client left
                    return 499
                status, payload, scope["panelcast.version"] = await answer(service, body, ticket)
        except Exception:
            logger.exception("unhandled error answering %s %s", scope["method"], scope["path"])
            status, payload = 500, dumps({"error": "internal error (logged)", "status": 500})
        finally:
            service.batcher.depart(ticket)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return status

    def _record(self, scope: dict, status: int, seconds: float) -> None:
        path = scope["path"]
        self.service.metrics.observe(path, status, seconds)
        if access_logger.isEnabledFor(logging.INFO):
            access_logger.info(
                json.dumps(
                    {
                        "ts": round(time.time(), 3),
                        "method": scope["method"],
                        "path": path[:200],
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                        "model_version": scope.get("panelcast.version") or self.service.version,
                        "worker": self.service.metrics.worker,
                    }
                )
            )


def create_app(
    params: Params,
    allow_failed_gate: bool = False,
    loaded: Loaded | None = None,
    metrics: Metrics | None = None,
) -> Any:
    """The ASGI application. Without ``loaded`` it loads the deployed model at start-up
    (raising what :func:`load_bundle` raises); with it, that model is served."""
    service = Service(params, allow_failed_gate, loaded, metrics)
    seg = params.problem.segment_column

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        yield
        await service.stop()

    app = FastAPI(
        title="panelcast",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = service

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return json_response({"error": str(exc.detail), "status": exc.status_code}, exc.status_code)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return json_response({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        if service.ready:
            return json_response({"ready": True, "model_version": service.version, "segment": seg})
        return json_response({"ready": False}, 503)

    @app.get("/v2/models/panelcast")
    async def metadata(request: Request) -> Response:
        loaded = service.current
        if loaded is None:
            return json_response({"error": "the model is loading", "status": 503}, 503)
        request.scope["panelcast.version"] = loaded.version
        segments = request.query_params.getlist("segment")
        try:
            return json_response(model_metadata(loaded, segments))
        except ClientError as exc:
            return error_response(exc)

    @app.get("/v2/models/panelcast/ready")
    async def model_ready() -> Response:
        if service.ready:
            return json_response(
                {"name": "panelcast", "ready": True, "model_version": service.version}
            )
        return json_response({"name": "panelcast", "ready": False}, 503)

    @app.get("/forecasts/{segment}")
    async def batch_forecast(segment: str, request: Request) -> Response:
        loaded = service.current
        record = loaded.forecasts.get(segment)
        request.scope["panelcast.version"] = loaded.version
        if record is None:
            if not loaded.forecasts:
                message = f"no batch forecasts file at {params.paths.forecasts}"
            else:
                message = f"no batch forecast for {seg} {show(segment)!r}"
            return error_response(
                ClientError(404, message, [detail(seg, "known_segment", segment)])
            )
        return json_response(record)

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        return await _routed(request, service, answer_predict)

    @app.post("/v2/models/panelcast/infer")
    async def infer(request: Request) -> Response:
        return await _routed(request, service, answer_infer)

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/admin/reload")
    async def admin_reload(request: Request) -> Response:
        host = request.client.host if request.client else ""
        if not host.startswith(LOOPBACK):
            return error_response(
                ClientError(403, "reloading is allowed from the loopback interface only.")
            )
        status, body = await service.reload(force=True)
        supervisor = os.environ.get("PANELCAST_SUPERVISOR_PID")
        if supervisor and supervisor.isdigit() and int(supervisor) == os.getppid():
            os.kill(int(supervisor), signal.SIGHUP)  # the other workers look too
        return json_response(body, status)

    return Observe(app, service)
