"""Stage collect: read the source named in params; write an immutable snapshot, its provenance."""

from pathlib import Path

from panelcast.core.io import write_json, write_parquet
from panelcast.core.stage import run_stage
from panelcast.pipeline.collect import collect

#: Downloads and decompressed copies are kept here while they are parsed (git-ignored).
TMP_DIR = Path(".dvc") / "tmp"


def main(params, args) -> None:
    tmp_dir = TMP_DIR if TMP_DIR.parent.is_dir() else None
    frame, record = collect(params.source, params.problem, tmp_dir)
    write_parquet(params.paths.snapshot, frame)
    write_json(params.paths.metric("collect"), record)


if __name__ == "__main__":
    run_stage("collect", main)
