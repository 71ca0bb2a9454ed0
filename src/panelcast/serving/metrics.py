"""Request metrics shared by the worker processes, in the Prometheus text format.

The counters live in one anonymous shared memory map created before the workers are
forked: each worker writes only its own slot (no lock), and ``/metrics`` in any worker
adds up every slot, so a scrape sees the whole service. Label values are bounded: a
fixed list of routes (anything else is ``other``) and of status codes.
"""

from __future__ import annotations

import mmap
import time

import numpy as np

ROUTES = (
    "/predict",
    "/v2/models/panelcast/infer",
    "/forecasts/{segment}",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/panelcast",
    "/v2/models/panelcast/ready",
    "/metrics",
    "/admin/reload",
    "other",
)
STATUSES = (200, 400, 403, 404, 405, 409, 413, 422, 500, 503, 0)  # 0: any other
#: Latency histogram bounds (seconds).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ERRORS = ("client_error", "server_error", "reload_failed")
VERSION_BYTES = 32

_ROUTE_INDEX = {r: i for i, r in enumerate(ROUTES)}
_STATUS_INDEX = {s: i for i, s in enumerate(STATUSES)}


def route_of(path: str) -> str:
    """The route template of a request path (bounded label values)."""
    if path in _ROUTE_INDEX:
        return path
    if path.startswith("/forecasts/") and path.count("/") == 2:
        return "/forecasts/{segment}"
    return "other"


class Metrics:
    """Counters for ``workers`` processes; :meth:`slot` picks this process's row."""

    def __init__(self, workers: int = 1):
        self.workers = workers
        r, s, b, e = len(ROUTES), len(STATUSES), len(BUCKETS) + 1, len(ERRORS)
        layout = [
            ("counts", np.int64, (workers, r, s)),
            ("buckets", np.int64, (workers, r, b)),
            ("sums", np.float64, (workers, r)),
            ("errors", np.int64, (workers, e)),
            ("model_calls", np.int64, (workers,)),
            ("model_rows", np.int64, (workers,)),
            ("reloads", np.int64, (workers,)),
            ("loaded_at", np.float64, (workers,)),
            ("versions", np.uint8, (workers, VERSION_BYTES)),
        ]
        size = sum(int(np.prod(shape)) * np.dtype(dt).itemsize for _, dt, shape in layout)
        self._map = mmap.mmap(-1, max(size, 1))  # anonymous, shared with forked children
        offset = 0
        for name, dt, shape in layout:
            count = int(np.prod(shape))
            view = np.frombuffer(self._map, dtype=dt, count=count, offset=offset).reshape(shape)
            setattr(self, name, view)
            offset += count * np.dtype(dt).itemsize
        self.worker = 0

    def slot(self, worker: int) -> None:
        self.worker = worker

    def observe(self, path: str, status: int, seconds: float) -> None:
        w = self.worker
        route = _ROUTE_INDEX[route_of(path)]
        self.counts[w, route, _STATUS_INDEX.get(status, len(STATUSES) - 1)] += 1
        self.buckets[w, route, int(np.searchsorted(BUCKETS, seconds))] += 1
        self.sums[w, route] += seconds
        if status >= 500:
            self.errors[w, 1] += 1
        elif status >= 400:
            self.errors[w, 0] += 1

    def model_call(self, rows: int) -> None:
        self.model_calls[self.worker] += 1
        self.model_rows[self.worker] += rows

    def reload_failed(self) -> None:
        self.errors[self.worker, 2] += 1

    def loaded(self, version: str, reload: bool) -> None:
        w = self.worker
        raw = version.encode()[:VERSION_BYTES]
        self.versions[w] = 0
        self.versions[w, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        self.loaded_at[w] = time.time()
        if reload:
            self.reloads[w] += 1

    def render(self) -> bytes:
        """Every worker's counters added up, in the Prometheus text format 0.0.4."""
        lines = [
            "# HELP panelcast_requests_total HTTP requests answered, by route and status.",
            "# TYPE panelcast_requests_total counter",
        ]
        counts = self.counts.sum(axis=0)
        for i, route in enumerate(ROUTES):
            for j, status in enumerate(STATUSES):
                if counts[i, j]:
                    code = str(status) if status else "other"
                    lines.append(
                        f'panelcast_requests_total{{route="{route}",status="{code}"}} '
                        f"{int(counts[i, j])}"
                    )
        lines += [
            "# HELP panelcast_request_duration_seconds Time from request to response.",
            "# TYPE panelcast_request_duration_seconds histogram",
        ]
        buckets, sums = self.buckets.sum(axis=0), self.sums.sum(axis=0)
        for i, route in enumerate(ROUTES):
            total = int(buckets[i].sum())
            if not total:
                continue
            running = 0
            for k, bound in enumerate(BUCKETS):
                running += int(buckets[i, k])
                lines.append(
                    f'panelcast_request_duration_seconds_bucket{{route="{route}",le="{bound}"}} '
                    f"{running}"
                )
            lines.append(
                f'panelcast_request_duration_seconds_bucket{{route="{route}",le="+Inf"}} {total}'
            )
            lines.append(f'panelcast_request_duration_seconds_sum{{route="{route}"}} {sums[i]:.6f}')
            lines.append(f'panelcast_request_duration_seconds_count{{route="{route}"}} {total}')
        errors = self.errors.sum(axis=0)
        lines += [
            "# HELP panelcast_errors_total Client errors (4xx), server errors (5xx), refused "
            "model reloads.",
            "# TYPE panelcast_errors_total counter",
        ]
        lines += [
            f'panelcast_errors_total{{kind="{k}"}} {int(errors[i])}' for i, k in enumerate(ERRORS)
        ]
        lines += [
            "# HELP panelcast_model_info The model version each worker serves (value 1).",
            "# TYPE panelcast_model_info gauge",
        ]
        for w in range(self.workers):
            version = bytes(self.versions[w]).rstrip(b"\0").decode(errors="replace")
            if version:
                lines.append(f'panelcast_model_info{{version="{version}",worker="{w}"}} 1')
        lines += [
            "# HELP panelcast_model_loaded_timestamp_seconds When each worker loaded its model.",
            "# TYPE panelcast_model_loaded_timestamp_seconds gauge",
        ]
        for w in range(self.workers):
            if self.loaded_at[w]:
                lines.append(
                    f'panelcast_model_loaded_timestamp_seconds{{worker="{w}"}} '
                    f"{self.loaded_at[w]:.3f}"
                )
        lines += [
            "# HELP panelcast_model_reloads_total Models swapped in while serving.",
            "# TYPE panelcast_model_reloads_total counter",
            f"panelcast_model_reloads_total {int(self.reloads.sum())}",
            "# HELP panelcast_model_calls_total Model evaluations (one per micro-batch).",
            "# TYPE panelcast_model_calls_total counter",
            f"panelcast_model_calls_total {int(self.model_calls.sum())}",
            "# HELP panelcast_model_rows_total Segments forecast by those evaluations.",
            "# TYPE panelcast_model_rows_total counter",
            f"panelcast_model_rows_total {int(self.model_rows.sum())}",
            "# HELP panelcast_workers Worker processes.",
            "# TYPE panelcast_workers gauge",
            f"panelcast_workers {self.workers}",
        ]
        return ("\n".join(lines) + "\n").encode()
