"""Stage check_params: load the whole params.yaml strictly before anything else runs.

Each later stage tracks only its own keys, so without this stage DVC would not notice an
unknown or misspelled top-level key (nothing it tracks changed). The output never changes
while the params are valid, so the stages after it do not rerun on its account.
"""

from panelcast.core.io import write_json
from panelcast.core.stage import run_stage


def main(params, args) -> None:
    write_json(params.paths.metric("params_check"), {"file": args.params, "valid": True})


if __name__ == "__main__":
    run_stage("check_params", main)
