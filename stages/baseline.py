"""Stage baseline: the rule-based benchmarks, scored on the test window like the model, and
the per-segment statistical models scored beside them (``baseline.statistical``)."""

import pandas as pd

from panelcast.core.io import write_json, write_parquet
from panelcast.core.periods import TARGET, WINDOW, T
from panelcast.core.stage import run_stage
from panelcast.pipeline.baseline import baseline


def main(params, args) -> None:
    paths, problem = params.paths, params.problem
    # only the columns the rules and the statistical models read: the segment, time and
    # target of the panel, the keys, window and target of the feature rows
    table = pd.read_parquet(
        paths.validated, columns=[problem.segment_column, *problem.time.columns, problem.target]
    )
    features = pd.read_parquet(paths.features, columns=[problem.segment_column, T, WINDOW, TARGET])
    preds, result = baseline(table, features, params)
    del table, features
    write_parquet(paths.baseline, preds)
    write_json(paths.metric("baseline"), result)


if __name__ == "__main__":
    run_stage("baseline", main)
