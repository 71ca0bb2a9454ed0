"""Headless Chromium for the browser tests, and a trap proxy that catches any request it makes.

`make test` installs Debian's chromium first (`make browser`). Chromium runs with every HTTP(S)
request, loopback included, sent to a TrapProxy on 127.0.0.1 that records it and answers 403,
and with a host resolver that resolves nothing: a page that loads a script, style, font or
image from anywhere shows up in `TrapProxy.seen`, and still cannot reach it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM_ENV = "PANELCAST_CHROMIUM"
CHROMIUM_DEFAULT = "/usr/bin/chromium"
CHROMIUM_TIMEOUT = 60  # seconds for one Chromium run (a page with Vega takes about 2 s)

#: Chromium's own services (Google account listing, component updates) start at every launch
#: whatever the flags say (seen with Debian's Chromium 156: accounts.google.com ListAccounts,
#: update.googleapis.com). They are pointed at this host, which never resolves, so the trap
#: can tell them from what the page asks for; every other request counts against the page.
CHROMIUM_OWN_HOST = "chromium-own-services.invalid"

MISSING_CHROMIUM = (
    "Chromium is missing ({tried}): `make test` installs it (`make browser`, as root), or "
    "`apt-get update && apt-get install -y --no-install-recommends chromium`; "
    f"{CHROMIUM_ENV}=/path/to/chromium picks another binary"
)


def find_chromium() -> str | None:
    """The Chromium binary: $PANELCAST_CHROMIUM, else chromium on PATH, else /usr/bin/chromium."""
    candidates = [os.environ.get(CHROMIUM_ENV), shutil.which("chromium"), CHROMIUM_DEFAULT]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_chromium() -> str:
    found = find_chromium()
    if found is None:
        tried = ", ".join(
            filter(None, [os.environ.get(CHROMIUM_ENV), "chromium on PATH", CHROMIUM_DEFAULT])
        )
        raise AssertionError(MISSING_CHROMIUM.format(tried=tried))
    return found


class _TrapHandler(BaseHTTPRequestHandler):
    """Records each request (a proxied URL, or CONNECT host:port for HTTPS) and refuses it."""

    protocol_version = "HTTP/1.0"

    def handle(self) -> None:
        self.server.connections += 1  # type: ignore[attr-defined]
        super().handle()

    def _trap(self) -> None:
        self.server.record(f"{self.command} {self.path}")  # type: ignore[attr-defined]
        body = b"blocked by the test's trap proxy\n"
        self.send_response(403)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_CONNECT = _trap

    def send_error(self, code, message=None, explain=None) -> None:  # not even HTTP
        self.server.record(f"malformed request ({code}): {self.raw_requestline[:80]!r}")  # type: ignore[attr-defined]
        super().send_error(code, message, explain)

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet
        pass


class TrapProxy(ThreadingHTTPServer):
    """An HTTP proxy on 127.0.0.1 (a free port) that answers every request with 403.

    Use as a context manager; `seen` lists what it was asked for, `connections` counts the
    TCP connections it accepted (a client that connected and said nothing counts too).
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TrapHandler)
        self.seen: list[str] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def record(self, line: str) -> None:
        with self._lock:
            self.seen.append(line)

    @property
    def page_requests(self) -> list[str]:
        """Every request but Chromium's own services' (see CHROMIUM_OWN_HOST)."""
        with self._lock:
            return [line for line in self.seen if request_host(line) != CHROMIUM_OWN_HOST]

    def __enter__(self) -> TrapProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


def request_host(line: str) -> str | None:
    """The host of a recorded request: `CONNECT host:443` or `GET http://host/path`."""
    parts = line.split(" ", 2)
    if len(parts) < 2:
        return None
    method, target = parts[0], parts[1]
    if method == "CONNECT":
        return target.rsplit(":", 1)[0].strip("[]").lower()
    return (urlsplit(target).hostname or "").lower() or None


def chromium_flags(proxy_port: int, profile_dir: Path, window: tuple[int, int]) -> list[str]:
    """Headless, as root in a container, with nothing of Chromium's own going out."""
    return [
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        f"--user-data-dir={profile_dir}",
        "--no-first-run",
        "--no-default-browser-check",
        "--password-store=basic",
        "--use-mock-keychain",
        # Chromium's own traffic: background services, component and extension updates,
        # sync, default apps, Safe Browsing, crash and metrics reports, domain reliability,
        # field trials, translation, optimization hints, media router
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-client-side-phishing-detection",
        "--safebrowsing-disable-auto-update",
        "--disable-domain-reliability",
        "--disable-breakpad",
        "--disable-crash-reporter",
        "--metrics-recording-only",
        "--disable-field-trial-config",
        "--disable-features=Translate,OptimizationHints,MediaRouter,"
        "DialMediaRouteProvider,AutofillServerCommunication,CertificateTransparencyComponentUpdater,"
        "InterestFeedContentSuggestions,NetworkTimeServiceQuerying",
        # what still starts goes to a host of its own (CHROMIUM_OWN_HOST), caught by the trap
        f"--gaia-url=https://{CHROMIUM_OWN_HOST}/",
        f"--google-apis-url=https://{CHROMIUM_OWN_HOST}/",
        f"--lso-url=https://{CHROMIUM_OWN_HOST}/",
        f"--component-updater=url-source=http://{CHROMIUM_OWN_HOST}/update",
        # every request to the trap (loopback too: "<-loopback>" drops its implicit bypass),
        # and no host name resolves, so nothing that skips the proxy gets anywhere either
        f"--proxy-server=http://127.0.0.1:{proxy_port}",
        "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--window-size={window[0]},{window[1]}",
        "--hide-scrollbars",
    ]


@dataclass
class BrowserRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    screenshot: Path | None


def render(
    page: Path,
    *,
    proxy: TrapProxy,
    workdir: Path,
    screenshot: bool = True,
    dump_dom: bool = False,
    window: tuple[int, int] = (1200, 3000),
    budget_ms: int = 10_000,
    timeout: float = CHROMIUM_TIMEOUT,
) -> BrowserRun:
    """Open the file `page` in headless Chromium; a PNG screenshot and/or the DOM after scripts.

    --virtual-time-budget lets the page's scripts and timers run (Vega renders after load)
    before the screenshot or DOM is taken. Fails the test on a non-zero exit or a timeout.
    """
    chromium = require_chromium()
    workdir.mkdir(parents=True, exist_ok=True)
    profile = workdir / "profile"
    png = workdir / "screenshot.png"
    args = [chromium, *chromium_flags(proxy.port, profile, window)]
    args.append(f"--virtual-time-budget={budget_ms}")
    if screenshot:
        args.append(f"--screenshot={png}")
    if dump_dom:
        args.append("--dump-dom")
    args.append(page.resolve().as_uri())
    started = time.monotonic()
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"Chromium did not finish in {timeout} s: {args}") from err
    seconds = time.monotonic() - started
    run = BrowserRun(
        done.returncode, done.stdout, done.stderr, seconds, png if screenshot else None
    )
    if done.returncode != 0:
        raise AssertionError(f"Chromium exited {done.returncode}:\n{done.stderr[-3000:]}")
    if screenshot and not png.is_file():
        raise AssertionError(f"Chromium wrote no screenshot:\n{done.stderr[-3000:]}")
    return run


@dataclass
class Ink:
    """How much of a screenshot is drawn: share of pixels that are not (near) white, and the
    standard deviation of the grey levels (0 for a blank page of any one colour)."""

    width: int
    height: int
    non_white: float
    stddev: float
    colours: int


def ink(png: Path) -> Ink:
    from PIL import Image, ImageStat

    with Image.open(png) as image:
        image.load()
        rgb = image.convert("RGB")
    grey = rgb.convert("L")
    histogram = grey.histogram()
    total = rgb.width * rgb.height
    non_white = sum(histogram[:245]) / total
    stddev = ImageStat.Stat(grey).stddev[0]
    colours = len(rgb.getcolors(maxcolors=1 << 20) or [])
    return Ink(rgb.width, rgb.height, non_white, stddev, colours)


def tracked_copy(root: Path, dest: Path) -> Path:
    """The files git tracks in ``root``, as they are in its work tree, copied to ``dest``:
    what a fresh clone (CI) has, without DVC's outputs that a work tree may also hold."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = root / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest
