"""Push and pull times of DVC remotes: a local folder (like the default remote) and an
S3-compatible SeaweedFS server on 127.0.0.1 (scripts/s3_server.py).

Two payloads in a copy of the repository: the pipeline's outputs (`dvc repro` once, with
params.yaml as it is, or `--fast`: search off) and random bytes generated locally
(default 100 MiB in 10 files, `dvc add`ed). For each payload, remote and repeat: `dvc push`
to an empty location, then `dvc pull` into a fresh `git clone` (empty cache), timed with
the wall clock. Figures are printed, never asserted.

    .venv/bin/python benchmarks/remote_benchmark.py
    .venv/bin/python benchmarks/remote_benchmark.py --fast --mb 100 --files 10 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import copy_repo, set_params  # noqa: E402
from tests.integration.remote_helpers import load_s3_server  # noqa: E402

REMOTE = "bench"  # remote name, configured --local in the copy and in every clone


def env_for(repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(repo / "src")
    env["DVC_NO_ANALYTICS"] = "1"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "bench"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "bench@example.invalid"
    return env


def sh(cmd: list[str], cwd: Path) -> float:
    """Run a command, fail loudly; return its wall-clock seconds."""
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env_for(cwd), capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}")
    return seconds


@dataclass
class Payload:
    name: str
    target: str  # what `dvc push` / `dvc pull` are given
    files: int = 0
    nbytes: int = 0


@dataclass
class Result:
    payload: Payload
    remote: str
    push: list[float] = field(default_factory=list)
    pull: list[float] = field(default_factory=list)


def configure(repo: Path, kind: str, location: str, server) -> None:
    if kind == "local":
        sh(["dvc", "remote", "add", "--local", "-f", REMOTE, location], repo)
        return
    sh(["dvc", "remote", "add", "--local", "-f", REMOTE, f"s3://{server.bucket}/{location}"], repo)
    for option, value in (
        ("endpointurl", server.endpoint_url),
        ("access_key_id", server.access_key),
        ("secret_access_key", server.secret_key),
    ):
        sh(["dvc", "remote", "modify", "--local", REMOTE, option, value], repo)


def prepare(work: Path, fast: bool, mb: int, files: int) -> tuple[Path, list[Payload]]:
    repo = copy_repo(work / "repo")
    if fast:
        set_params(repo, {"train.search.enabled": False})
        sh(["git", "commit", "-q", "-am", "fast"], repo)
    print(f"dvc repro{' (search off)' if fast else ''} ...", flush=True)
    seconds = sh(["dvc", "repro"], repo)
    print(f"  dvc repro took {seconds:.1f} s", flush=True)

    payload_dir = repo / "payload"
    payload_dir.mkdir()
    size = mb * 1024 * 1024 // files
    for i in range(files):
        with open(payload_dir / f"blob_{i:03d}.bin", "wb") as handle:
            for _ in range(size // (1 << 20)):
                handle.write(os.urandom(1 << 20))
            handle.write(os.urandom(size % (1 << 20)))
    sh(["dvc", "add", "payload"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-q", "-m", "repro and payload"], repo)

    # What each payload transfers: measured once on a scratch local remote.
    payloads = [Payload("pipeline outputs", "dvc.yaml"), Payload(f"{mb} MiB random", "payload.dvc")]
    for p in payloads:
        scratch = work / f"measure-{p.target}"
        configure(repo, "local", str(scratch), None)
        sh(["dvc", "push", "-r", REMOTE, p.target], repo)
        blobs = [f for f in scratch.rglob("*") if f.is_file() and not f.name.endswith(".dir")]
        p.files, p.nbytes = len(blobs), sum(f.stat().st_size for f in blobs)
        shutil.rmtree(scratch)
    return repo, payloads


def bench(repo: Path, work: Path, payload: Payload, kind: str, server, repeats: int) -> Result:
    result = Result(payload, kind)
    for i in range(repeats):
        tag = f"{payload.target.replace('.', '-')}-{kind}-{i}"
        location = str(work / f"store-{tag}") if kind == "local" else tag
        configure(repo, kind, location, server)
        result.push.append(sh(["dvc", "push", "-r", REMOTE, payload.target], repo))
        clone = work / f"clone-{tag}"
        sh(["git", "clone", "-q", str(repo), str(clone)], work)
        configure(clone, kind, location, server)
        result.pull.append(sh(["dvc", "pull", "-r", REMOTE, payload.target], clone))
        shutil.rmtree(clone)
        if kind == "local":
            shutil.rmtree(location)
    return result


def report(results: list[Result], repeats: int) -> None:
    print()
    print(f"median of {repeats} (min), wall-clock seconds; MB/s from the median")
    header = (
        f"{'payload':<18} {'remote':<11} {'files':>5} {'MB':>7} "
        f"{'push s':>14} {'pull s':>14} {'push MB/s':>9} {'pull MB/s':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        mb = r.payload.nbytes / 1e6
        push, pull = statistics.median(r.push), statistics.median(r.pull)
        print(
            f"{r.payload.name:<18} {r.remote:<11} {r.payload.files:>5} {mb:>7.1f} "
            f"{push:>7.2f} ({min(r.push):>4.2f}) {pull:>7.2f} ({min(r.pull):>4.2f}) "
            f"{mb / push:>9.1f} {mb / pull:>9.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="pipeline with the search off")
    parser.add_argument("--mb", type=int, default=100, help="random payload size (MiB)")
    parser.add_argument("--files", type=int, default=10, help="random payload file count")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    from dvc import __version__ as dvc_version

    s3_server = load_s3_server()
    print(
        f"dvc {dvc_version}, python {platform.python_version()}, {os.cpu_count()} cpu(s), "
        f"SeaweedFS {s3_server.find_weed()}"
    )
    work = Path(tempfile.mkdtemp(prefix="remote-bench-"))
    try:
        repo, payloads = prepare(work, args.fast, args.mb, args.files)
        results = []
        with s3_server.S3Server(work / "s3", bucket="bench") as server:
            print(f"S3 server {server.endpoint_url} up in {server.startup_seconds:.1f} s")
            for payload in payloads:
                for kind in ("local", "s3"):
                    print(f"  {payload.name} / {kind} ...", flush=True)
                    results.append(bench(repo, work, payload, kind, server, args.repeats))
        report(results, args.repeats)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
