"""Stage collect: read the source named in params; write an immutable snapshot, its provenance."""

from panelcast.core.io import write_json, write_parquet
from panelcast.core.stage import run_stage
from panelcast.pipeline.collect import collect


def main(params, args) -> None:
    frame, record = collect(params.source, params.problem)
    write_parquet(params.paths.snapshot, frame)
    write_json(params.paths.metric("collect"), record)


if __name__ == "__main__":
    run_stage("collect", main)
