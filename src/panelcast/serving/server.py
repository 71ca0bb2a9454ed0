"""``panelcast serve``: uvicorn worker processes around :func:`panelcast.serving.app.create_app`.

The command loads and checks the deployed model once, before anything listens: a model
file that does not load, holds untrusted types, does not match the sha256 of its
metadata, failed its gate (without ``--allow-failed-gate``) or does not match the params
and the contract stops it with one line and exit code 2. It then binds the address
(loopback by default) and serves:

- one worker: uvicorn in this process;
- ``--workers N``: N processes forked from this one after the model is loaded and warm
  (no second load, memory shared copy-on-write), each with its own listening socket on
  the same port (``SO_REUSEPORT``: the kernel spreads connections evenly). This process
  supervises them: ``SIGTERM``/``SIGINT`` stop them gracefully, ``SIGHUP`` is passed on
  (each worker checks the deployed files), a worker that dies is replaced.

Every worker runs with one BLAS/OpenMP thread (``OMP_NUM_THREADS=1``): on a loaded
machine two threads per worker make HistGradientBoosting many times slower.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time

from ..core.errors import UserError

logger = logging.getLogger("panelcast.serving")

#: A worker dying more often than this (per minute) stops the service.
MAX_RESTARTS_PER_MINUTE = 5


def bind(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one address (``SO_REUSEPORT`` when several)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {port}.")
    try:
        if count > 1:
            # a plain probe first: a port held by anyone, even with SO_REUSEPORT, is refused
            probe = socket.socket(family, socket.SOCK_STREAM)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            port = probe.getsockname()[1]
            probe.close()
        sockets = []
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(2048)
            sock.set_inheritable(True)
            sockets.append(sock)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    return sockets


def run_worker(app, sock: socket.socket) -> None:
    """uvicorn serving ``app`` on ``sock`` until SIGTERM/SIGINT."""
    import uvicorn

    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_keep_alive=30,
        backlog=2048,
    )
    uvicorn.Server(config).run(sockets=[sock])


def serve(args: argparse.Namespace) -> None:
    """Run the service (see the module docstring); returns when it was stopped."""
    os.environ["OMP_NUM_THREADS"] = "1"
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the workers handle it
    from threadpoolctl import threadpool_limits

    from ..core.config import load_params
    from .loading import load_bundle

    limits = threadpool_limits(limits=1)  # noqa: F841 (kept for the life of the process)
    started = time.perf_counter()
    workers = int(args.workers)
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}.")
    params = load_params(args.params)
    loaded = load_bundle(params, allow_failed_gate=args.allow_failed_gate)
    # the web stack, imported once here rather than in every forked worker
    import uvicorn.lifespan.on  # noqa: F401
    import uvicorn.loops.uvloop  # noqa: F401
    import uvicorn.protocols.http.httptools_impl  # noqa: F401

    from .app import create_app
    from .metrics import Metrics

    if not loaded.forecaster.metadata["gate"]["passed"]:
        logger.warning(
            "serving model %s although it failed its gate (--allow-failed-gate): %s",
            loaded.version,
            "; ".join(loaded.forecaster.metadata["gate"]["failures"]),
        )
    sockets = bind(args.host, args.port, workers)
    host, port = sockets[0].getsockname()[:2]
    logger.info(
        "model %s loaded and warm in %.2f s; listening on http://%s:%d with %d worker(s)",
        loaded.version,
        time.perf_counter() - started,
        host,
        port,
        workers,
    )
    metrics = Metrics(workers)
    if workers == 1:
        run_worker(create_app(params, args.allow_failed_gate, loaded, metrics), sockets[0])
        return
    _supervise(params, args.allow_failed_gate, loaded, metrics, sockets)


def _supervise(params, allow_failed_gate, loaded, metrics, sockets) -> None:
    from .app import create_app

    os.environ["PANELCAST_SUPERVISOR_PID"] = str(os.getpid())
    children: dict[int, int] = {}
    stopping = False
    restarts: list[float] = []

    def spawn(worker: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the app installs its handler
                metrics.slot(worker)
                app = create_app(params, allow_failed_gate, loaded, metrics)
                run_worker(app, sockets[worker])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                logger.exception("worker %d failed", worker)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = worker

    def stop(sig: int, frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def hangup(sig: int, frame) -> None:
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in range(len(sockets)):
        spawn(worker)
    signal.signal(signal.SIGHUP, hangup)
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        worker = children.pop(pid, None)
        if worker is None or stopping:
            continue
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < 60] + [now]
        logger.error(
            "worker %d (pid %d) stopped unexpectedly (status %d)%s",
            worker,
            pid,
            status,
            "; starting a new one" if len(restarts) <= MAX_RESTARTS_PER_MINUTE else "",
        )
        if len(restarts) > MAX_RESTARTS_PER_MINUTE:
            failed = True
            stop(signal.SIGTERM, None)
            continue
        spawn(worker)
    for sock in sockets:
        sock.close()
    if failed:
        logger.error("workers kept dying; the service stopped")
        sys.exit(1)
