"""Hot reload: a newly promoted model replaces the served one without a failed request."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import threading
import time

from .bundle import GOOD, Server, copy_bundle, deployed_files, request

BODY = json.dumps({"rows": [GOOD], "segments": ["Dallas"]}).encode()


def promote(source_params, target_params) -> None:
    """Copy a bundle's deployed files over another's, each replaced atomically (as
    ``dvc checkout`` replaces a file), the metadata last."""
    for src, dst in zip(deployed_files(source_params), deployed_files(target_params), strict=True):
        tmp = dst.with_name(dst.name + ".incoming")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def version_of(params) -> str:
    return json.loads(open(params.paths.deployed_metadata).read())["version"]


class Hammer(threading.Thread):
    """Requests one after another on one connection until stopped (at most 60 s)."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.results, self.stop_at = port, [], time.monotonic() + 60
        self.halt = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.halt.is_set() and time.monotonic() < self.stop_at:
            try:
                conn.request("POST", "/predict", body=BODY)
                response = conn.getresponse()
                body = json.loads(response.read())
                self.results.append((response.status, body.get("model_version")))
            except Exception as exc:  # a failed request is a result too
                self.results.append((type(exc).__name__, None))
                conn.close()
        conn.close()

    def versions(self) -> list:
        return [v for _, v in self.results]


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_promoted_model_is_served_without_a_failed_request(bundle, other_bundle, tmp_path):
    params_file = copy_bundle(bundle["params_file"], tmp_path / "live", {"serve.max_rows": 1000})
    from panelcast.core.config import load_params

    params = load_params(params_file)
    old, new = version_of(bundle["params"]), version_of(other_bundle["params"])
    assert old != new
    with Server(params_file, workers=1) as srv:
        srv.wait_ready()
        hammer = Hammer(srv.port)
        hammer.start()
        assert wait_for(lambda: len(hammer.results) > 20)
        promote(other_bundle["params"], params)
        assert wait_for(lambda: hammer.versions()[-1:] == [new]), srv.log()[-2000:]
        count = len(hammer.results)
        assert wait_for(lambda: len(hammer.results) > count + 20)
        hammer.halt.set()
        hammer.join()
        statuses = {status for status, _ in hammer.results}
        assert statuses == {200}, statuses
        versions = hammer.versions()
        changes = sum(a != b for a, b in zip(versions, versions[1:], strict=False))
        assert versions[0] == old and versions[-1] == new and changes == 1, versions
        assert f"switched model {old} -> {new}" in srv.log()
        print(f"reload: {len(versions)} requests, {versions.count(old)} on the old model")

        # a broken new model is refused; the one in service keeps answering
        model = params.paths.deployed_model
        with open(model, "r+b") as f:
            f.seek(100)
            f.write(b"\x00\x01\x02")
        assert wait_for(lambda: "refused the new deployed model" in srv.log())
        status, body = request(srv.url + "/predict", "POST", {"segments": ["Austin"]})
        assert status == 200 and body["model_version"] == new
        status, text = request(srv.url + "/metrics")
        assert 'panelcast_errors_total{kind="reload_failed"} 0' not in text
        assert f'panelcast_model_info{{version="{new}",worker="0"}} 1' in text

        # limits of this copy (serve.max_rows 1000): row count and a streamed body
        status, body = request(srv.url + "/predict", "POST", {"segments": ["Austin"] * 1001})
        assert status == 413
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"[" * 65536
            try:
                for _ in range(64):  # 4 MiB, above the 2 MiB cap of 1000 rows
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                pass  # the server answered and closed before the end
            answer = sock.recv(65536).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 413"), answer[:200]


def test_sighup_and_admin_reload_switch_when_not_watching(bundle, other_bundle, tmp_path):
    from panelcast.core.config import load_params

    params_file = copy_bundle(bundle["params_file"], tmp_path / "quiet")
    params = load_params(params_file)
    old, new = version_of(bundle["params"]), version_of(other_bundle["params"])
    with Server(params_file, workers=2, environ={"PANELCAST_RELOAD_POLL": "0"}) as srv:
        srv.wait_ready()
        # ready means one worker answers: wait until both have loaded the old model, or a
        # worker still starting would load the promoted files on its own
        assert wait_for(lambda: both_old(srv, old)), srv.log()[-2000:]
        promote(other_bundle["params"], params)
        time.sleep(1.0)
        assert (
            request(srv.url + "/predict", "POST", {"segments": ["Austin"]})[1]["model_version"]
            == old
        )
        srv.proc.send_signal(signal.SIGHUP)  # the supervisor passes it to both workers

        def both_new():
            text = request(srv.url + "/metrics")[1]
            return all(
                f'panelcast_model_info{{version="{new}",worker="{w}"}} 1' in text for w in (0, 1)
            )

        assert wait_for(both_new), srv.log()[-2000:]
        promote(bundle["params"], params)
        status, body = request(srv.url + "/admin/reload", "POST", b"")
        assert status == 200 and body["model_version"] == old, body
        assert wait_for(lambda: "switched model" in srv.log() and both_old(srv, old))


def both_old(srv, old) -> bool:
    text = request(srv.url + "/metrics")[1]
    return all(f'panelcast_model_info{{version="{old}",worker="{w}"}} 1' in text for w in (0, 1))
