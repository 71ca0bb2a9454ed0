"""Stage check_params: load the whole params.yaml strictly before anything else runs.

Each later stage tracks only its own keys, so without this stage DVC would not notice an
unknown or misspelled top-level key (nothing it tracks changed). Beyond the schema it
checks what needs the rest of the package: the estimator's hyperparameters and search
space, the drift key columns, and the data contract (``paths.contract``) with the columns
the params name. The output never changes while the params are valid, so the stages after
it do not rerun on its account.
"""

from panelcast.core.io import write_json
from panelcast.core.stage import run_stage
from panelcast.pipeline.check_params import check_params


def main(params, args) -> None:
    write_json(params.paths.metric("params_check"), check_params(params, args.params))


if __name__ == "__main__":
    run_stage("check_params", main)
