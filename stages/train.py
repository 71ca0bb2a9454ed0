"""Stage train: fit the global model (with the time-ordered search) and, by strategy, each
segment's own model; save them with skops (a directory with a manifest for the segment
models), the metadata, and the reference statistics the drift stage compares against."""

from panelcast.core.io import read_json, write_bytes, write_json
from panelcast.core.stage import run_stage
from panelcast.modelling.routing import write_model_dir
from panelcast.pipeline.train import read_training_data, train_on


def main(params, args) -> None:
    paths = params.paths
    data_sha256 = read_json(paths.metric("collect"))["source"]["sha256"]
    out = train_on(read_training_data(paths.features, params), data_sha256, params)
    write_bytes(paths.model, out.model_bytes)
    write_model_dir(paths.segment_models, out.manifest, out.segment_files)
    write_json(paths.model_metadata, out.metadata)
    write_json(paths.reference, out.reference)
    write_json(paths.metric("train"), out.metrics)


if __name__ == "__main__":
    run_stage("train", main)
