"""Collect never blocks or fills memory: silent, slow and endless servers, pipes and devices.

Real servers on 127.0.0.1 (port 0, a thread each), stopped by the fixture that started
them; tiny limits passed as arguments keep each test to a second or two.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from panelcast.data.sources import SourceError, parse_table, read_source

CSV = b"city,year,month,sales\nA,2000,1,10\nA,2000,2,12.5\nB,2000,1,\n"
Route = Callable[[BaseHTTPRequestHandler, bool], None]


# --------------------------------------------------------------------------- servers


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep the test output quiet
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        route = self.server.routes.get(self.path.split("?")[0])  # type: ignore[attr-defined]
        if route is None:
            self.send_error(404)
            return
        try:
            route(self, head)
        except (BrokenPipeError, ConnectionResetError):
            pass


def stopped(handler: BaseHTTPRequestHandler, seconds: float = 0.0) -> bool:
    """Wait ``seconds``; True when the test is over (the route must return)."""
    return handler.server.stop.wait(seconds)  # type: ignore[attr-defined]


def body(data: bytes, headers: dict[str, str] | None = None, head_ok: bool = True) -> Route:
    """A complete response with Content-Length and the given headers."""

    def route(h: BaseHTTPRequestHandler, head: bool) -> None:
        if head and not head_ok:
            h.send_error(405)
            return
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        if not head:
            h.wfile.write(data)

    return route


def drip(h: BaseHTTPRequestHandler, head: bool) -> None:
    """Announces 10,000 bytes, then sends one every 0.2 s."""
    h.send_response(200)
    h.send_header("Content-Length", "10000")
    h.end_headers()
    for _ in range(10_000):
        h.wfile.write(b"a")
        h.wfile.flush()
        if stopped(h, 0.2):
            return


def drip_headers(h: BaseHTTPRequestHandler, head: bool) -> None:
    """Sends its status line and headers one byte every 0.2 s (never a complete response)."""
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 10_000:
        h.wfile.write(bytes([byte]))
        h.wfile.flush()
        if stopped(h, 0.2):
            return


def endless(h: BaseHTTPRequestHandler, head: bool) -> None:
    """A body without Content-Length that never ends (until the client goes away)."""
    h.send_response(200)
    h.send_header("Connection", "close")
    h.end_headers()
    block = b"A,2000,1,10\n" * 5000
    h.wfile.write(b"city,year,month,sales\n")
    while not stopped(h):
        h.wfile.write(block)


def huge_length(h: BaseHTTPRequestHandler, head: bool) -> None:
    """Announces a terabyte."""
    h.send_response(200)
    h.send_header("Content-Length", str(10**12))
    h.end_headers()
    if not head:
        h.wfile.write(CSV)
        stopped(h, 5)


def short(h: BaseHTTPRequestHandler, head: bool) -> None:
    """Announces 1,000 bytes, sends the CSV (fewer) and closes."""
    h.send_response(200)
    h.send_header("Content-Length", "1000")
    h.send_header("Connection", "close")
    h.end_headers()
    h.wfile.write(CSV)
    h.close_connection = True


@contextmanager
def http_server(routes: dict[str, Route]) -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 serving ``routes``; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.routes = routes  # type: ignore[attr-defined]
    server.stop = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.stop.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def silent_server() -> Iterator[str]:
    """A socket on 127.0.0.1 that accepts connections (the kernel's backlog) and never
    answers; yields a URL on it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/data.csv"
    finally:
        sock.close()


ROUTES = {
    "/data.csv": body(CSV, {"ETag": '"v1"', "Last-Modified": "Tue, 01 Sep 2026 10:00:00 GMT"}),
    "/plain.csv": body(CSV),
    "/nohead.csv": body(CSV, head_ok=False),
    "/drip.csv": drip,
    "/drip-headers.csv": drip_headers,
    "/endless.csv": endless,
    "/huge.csv": huge_length,
    "/short.csv": short,
}


@pytest.fixture
def server() -> Iterator[str]:
    with http_server(ROUTES) as url:
        yield url


@pytest.fixture
def silent() -> Iterator[str]:
    with silent_server() as url:
        yield url


def refused(call: Callable[[], object], limit: float) -> tuple[str, float]:
    """The SourceError message of ``call()`` and the seconds it took; fails after ``limit``
    seconds (run in a thread, so a regression that blocks fails instead of hanging)."""
    result: dict[str, object] = {}

    def target() -> None:
        started = time.monotonic()
        try:
            call()
        except SourceError as exc:
            result["error"] = str(exc)
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["other"] = exc
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still blocked after {limit} s"
    assert "other" not in result, result.get("other")
    assert "error" in result, "no SourceError raised"
    return str(result["error"]), float(result["seconds"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- http(s)


def test_a_server_that_never_answers_times_out(silent):
    message, seconds = refused(lambda: read_source(silent, timeout_s=0.5), limit=10)
    assert "timed out after 0.5 s (source.timeout_s)" in message
    assert silent in message
    assert 0.4 < seconds < 3


def test_a_server_that_drips_bytes_hits_the_transfer_limit(server):
    url = f"{server}/drip.csv"
    message, seconds = refused(lambda: read_source(url, timeout_s=5, max_seconds=1), 10)
    assert "timed out after 1 s (source.max_seconds)" in message and url in message
    assert 0.9 < seconds < 3  # the idle timeout (5 s) never fired: each byte came in time


def test_slow_headers_hit_the_transfer_limit_too(server):
    url = f"{server}/drip-headers.csv"
    message, seconds = refused(lambda: read_source(url, timeout_s=5, max_seconds=1), 10)
    assert "timed out after 1 s (source.max_seconds)" in message
    assert seconds < 3


def test_an_endless_body_stops_at_the_size_limit(server, tmp_path):
    url = f"{server}/endless.csv"
    message, seconds = refused(
        lambda: read_source(url, max_bytes=2_000_000, tmp_dir=tmp_path / "t"), 10
    )
    assert "larger than the limit of 2000000 bytes (source.max_bytes)" in message
    assert seconds < 5
    assert list((tmp_path / "t").iterdir()) == []  # the partial download is removed


def test_an_announced_size_above_the_limit_is_refused_before_reading(server):
    url = f"{server}/huge.csv"
    message, seconds = refused(lambda: read_source(url, max_bytes=10**9), 10)
    assert "larger than the limit of 1000000000 bytes (source.max_bytes)" in message
    assert "announces 1000000000000 bytes" in message
    assert seconds < 2


def test_a_body_shorter_than_announced_is_refused(server):
    message, _ = refused(lambda: read_source(f"{server}/short.csv"), 10)
    assert f"closed after {len(CSV)} of the 1000 bytes" in message


def test_http_errors_and_refused_connections_name_the_source(server):
    message, _ = refused(lambda: read_source(f"{server}/missing.csv"), 10)
    assert "cannot be reached: HTTP 404" in message and "missing.csv" in message
    message, _ = refused(lambda: read_source("http://127.0.0.1:9/x.csv", timeout_s=2), 10)
    assert "'http://127.0.0.1:9/x.csv' cannot be reached" in message


def test_a_download_is_parsed_hashed_and_removed_afterwards(server, tmp_path):
    url = f"{server}/data.csv"
    with read_source(url, tmp_dir=tmp_path) as raw:
        assert raw.sha256 == hashlib.sha256(CSV).hexdigest() and raw.size == len(CSV)
        assert raw.headers["etag"] == '"v1"'
        assert raw.path.is_relative_to(tmp_path) and raw.path.read_bytes() == CSV
        frame = parse_table(raw)
    assert list(tmp_path.iterdir()) == []
    expected = pd.DataFrame(
        {"city": ["A", "A", "B"], "year": [2000] * 3, "month": [1, 2, 1], "sales": [10, 12.5, None]}
    )
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    assert frame["year"].dtype == "int64" and frame["sales"].dtype == "float64"


def test_a_gzip_bomb_stops_at_the_size_limit(server, tmp_path):
    path = tmp_path / "bomb.csv.gz"
    with gzip.open(path, "wb") as out:
        out.write(b"city,year\n")
        for _ in range(50):
            out.write(b"A,2000\n" * 100_000)  # 35 MB of text, about 100 kB compressed
    assert path.stat().st_size < 1_000_000
    work = tmp_path / "work"
    message, seconds = refused(
        lambda: read_source(str(path), max_bytes=1_000_000, tmp_dir=work), 10
    )
    assert "larger than the limit of 1000000 bytes (source.max_bytes)" in message
    assert "once decompressed (gzip)" in message and "bomb.csv.gz" in message
    assert list(work.iterdir()) == []


# --------------------------------------------------------------------------- local files


def test_a_named_pipe_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    message, seconds = refused(lambda: read_source(str(fifo)), limit=5)
    assert "is a named pipe (FIFO), not a regular file" in message and "pipe.csv" in message
    assert seconds < 1
    link = tmp_path / "link.csv"
    link.symlink_to(fifo)  # a link to a pipe is a pipe
    message, _ = refused(lambda: read_source(str(link)), limit=5)
    assert "named pipe (FIFO)" in message


def test_a_symlink_loop_is_one_line_naming_the_file(tmp_path):
    loop = tmp_path / "loop.csv"
    loop.symlink_to("loop.csv")
    message, _ = refused(lambda: read_source(str(loop)), limit=5)
    assert "loop.csv' cannot be read" in message and "(ELOOP)" in message


def test_dev_zero_is_refused():
    message, seconds = refused(lambda: read_source("/dev/zero", "csv"), limit=5)
    assert "'/dev/zero' is a character device, not a regular file" in message
    assert seconds < 1


def test_a_directory_and_a_socket_are_refused(tmp_path):
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    message, _ = refused(lambda: read_source(str(folder)), limit=5)
    assert "is a directory, not a file" in message
    sock_path = tmp_path / "sock.csv"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(sock_path))
        message, _ = refused(lambda: read_source(str(sock_path)), limit=5)
    assert "is a socket, not a regular file" in message


def test_a_local_file_above_the_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(CSV)
    message, _ = refused(lambda: read_source(str(path), max_bytes=10), limit=5)
    assert "larger than the limit of 10 bytes (source.max_bytes)" in message
    assert f"the file has {len(CSV)} bytes" in message
    raw = read_source(str(path), max_bytes=len(CSV))  # exactly at the limit: accepted
    assert raw.size == len(CSV)


def test_a_file_url_is_read_as_a_local_file(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    message, _ = refused(lambda: read_source(f"file://{fifo}"), limit=5)
    assert "named pipe (FIFO)" in message
    path = tmp_path / "t.csv"
    path.write_bytes(CSV)
    raw = read_source(f"file://{path}")
    assert raw.path == path and raw.workdir is None  # read in place, no copy


def test_other_fsspec_urls_are_copied_in_chunks_within_the_limit(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/panelcast-test/t.csv", CSV)
    try:
        with read_source("memory://panelcast-test/t.csv", tmp_dir=tmp_path) as raw:
            assert raw.sha256 == hashlib.sha256(CSV).hexdigest()
            assert len(parse_table(raw)) == 3
        message, _ = refused(
            lambda: read_source("memory://panelcast-test/t.csv", max_bytes=10), limit=5
        )
        assert "store reports" in message and "(source.max_bytes)" in message
    finally:
        fs.rm("/panelcast-test", recursive=True)
    assert list(tmp_path.iterdir()) == []


def test_the_limits_are_params_with_defaults(params):
    assert params.source.timeout_s == 30 and params.source.max_seconds == 600
    assert params.source.max_bytes == 4 * 2**30 and params.source.require_final_newline is True


@pytest.mark.parametrize(
    "key,value", [("timeout_s", 0), ("max_seconds", -1), ("max_bytes", 0), ("timeout_s", "x")]
)
def test_bad_limits_are_refused(params, key, value):
    from panelcast.core.config import SourceSpec

    with pytest.raises(ValueError, match=key):
        SourceSpec(**{**params.source.model_dump(), key: value})
