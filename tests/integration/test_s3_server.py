"""The local SeaweedFS S3 server: real put/get, loopback-only listeners, clean stop."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "s3_server.py"

pytestmark = pytest.mark.s3


def _load_module():
    spec = importlib.util.spec_from_file_location("s3_server", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("s3_server", module)
    spec.loader.exec_module(module)
    return module


s3_server = _load_module()


@pytest.fixture(scope="module")
def weed_binary() -> Path:
    try:
        return s3_server.find_weed()
    except s3_server.S3ServerError as error:
        pytest.skip(str(error))


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_put_get_loopback_only_and_clean_stop(tmp_path: Path, weed_binary: Path) -> None:
    from botocore.exceptions import ClientError

    began = time.monotonic()
    server = s3_server.S3Server(tmp_path / "s3", bucket="dvc-test")
    with server:
        pid, ports = server.pid, dict(server.ports)
        assert server.endpoint_url == f"http://127.0.0.1:{ports['s3']}"

        client = server.client()
        body = os.urandom(256 * 1024)
        client.put_object(Bucket="dvc-test", Key="dir/blob.bin", Body=body)
        assert client.get_object(Bucket="dvc-test", Key="dir/blob.bin")["Body"].read() == body
        listed = client.list_objects_v2(Bucket="dvc-test", Prefix="dir/")
        assert [o["Key"] for o in listed["Contents"]] == ["dir/blob.bin"]

        # Credentials are enforced: a wrong secret is refused.
        intruder = s3_server.make_client(server.endpoint_url, server.access_key, "wrong")
        with pytest.raises(ClientError):
            intruder.get_object(Bucket="dvc-test", Key="dir/blob.bin")

        # Every listening socket of the process is on 127.0.0.1, and every port we chose
        # (WebDAV is disabled, so its port is only probed, never kept open) is there.
        sockets = server.listening_sockets()
        assert sockets, "no listening sockets found"
        assert {address for _, address, _ in sockets} == {"127.0.0.1"}, sockets
        expected = {port for name, port in ports.items() if name != "webdav"}
        assert expected <= {port for _, _, port in sockets}, (expected, sockets)
        assert not (tmp_path / "s3" / "s3_identities.json").stat().st_mode & 0o077

    assert server.pid is None
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid), f"weed pid {pid} still running"
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no member of its process group is left either
    for name, port in ports.items():
        assert _port_closed(port), f"{name} port {port} still open"
    assert time.monotonic() - began < 90


def test_cli_start_and_stop(tmp_path: Path, weed_binary: Path) -> None:
    workdir = tmp_path / "cli"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    started = subprocess.run(
        [sys.executable, str(SCRIPT), "start", "--dir", str(workdir), "--bucket", "cli"],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    info_path = workdir / "server.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == info["endpoint_url"]
        client = s3_server.make_client(info["endpoint_url"], info["access_key"], info["secret_key"])
        client.put_object(Bucket="cli", Key="k", Body=b"v")
        assert client.get_object(Bucket="cli", Key="k")["Body"].read() == b"v"
        assert {a for _, a, _ in s3_server.listening_sockets(info["pid"])} == {"127.0.0.1"}
    finally:
        stopped = subprocess.run(
            [sys.executable, str(SCRIPT), "stop", "--dir", str(workdir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if info.get("pid") and not _gone(info["pid"]):  # never leave it running
            s3_server.terminate(info["pid"], None, 5)
    assert stopped.returncode == 0, stopped.stderr
    assert _gone(info["pid"])
    assert not info_path.exists()
    assert _port_closed(info["ports"]["s3"])
