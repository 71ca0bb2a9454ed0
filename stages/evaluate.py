"""Stage evaluate: score the model on the test window against the best rule; apply the gate."""

import logging

import pandas as pd

from panelcast.cli import StageError, run_stage
from panelcast.evaluation import gain_pct, gate, per_segment
from panelcast.features import PERIOD, TARGET, WINDOW, T
from panelcast.io import read_json, write_csv, write_json, write_parquet
from panelcast.metrics import scores
from panelcast.model import load_model

logger = logging.getLogger("panelcast.stages.evaluate")
MODEL = "models/model.skops"


def main(params, args) -> None:
    seg, metric = params.problem.segment, params.problem.metric
    features = pd.read_parquet("data/features.parquet")
    model = load_model(MODEL)
    cols = list(read_json("models/metadata.json")["features"])
    baseline = read_json("metrics/baseline.json")
    missing = [k for k in ("best_rule", "best") if k not in baseline]
    if missing:
        raise StageError(
            f"metrics/baseline.json: missing key(s) {missing} (edited by hand?); restore it "
            f"with `git checkout -- metrics/baseline.json` or rerun `dvc repro baseline`."
        )
    best_rule = baseline["best_rule"]
    rules = pd.read_parquet("data/baseline.parquet")
    test = features[features[WINDOW] == "test"].reset_index(drop=True)
    test_rules = rules[rules[WINDOW] == "test"].reset_index(drop=True)
    if not (test[T].to_numpy() == test_rules[T].to_numpy()).all():
        raise StageError(
            "data/baseline.parquet and data/features.parquet rows differ; rerun dvc repro."
        )
    out = test[[seg, PERIOD, T, TARGET]].copy()
    out["prediction"] = model.predict(test[cols])
    out[best_rule] = test_rules[best_rule].to_numpy()
    model_scores = scores(out[TARGET], out["prediction"])
    rule_scores = {k: baseline["best"][k] for k in ("n", "mae", "rmse", "wape", "r2")}
    gain = gain_pct(model_scores[metric], rule_scores[metric])
    passed, reasons = gate(model_scores, gain, params.evaluate.gate)
    by_seg = per_segment(out, seg, "prediction", best_rule)
    result = {
        "window": {"start": params.windows.test_start, "end": params.windows.test_end},
        "metric": metric,
        "model": model_scores,
        "best_rule": {"name": best_rule, **rule_scores},
        "gain_pct": round(gain, 4),
        "gate": {
            "max_wape": params.evaluate.gate.max_wape,
            "min_gain_pct": params.evaluate.gate.min_gain_pct,
        },
        "gate_passed": passed,
        "gate_failures": reasons,
        "segments_model_better": int((by_seg["mae"] < by_seg["rule_mae"]).sum()),
        "segments": int(len(by_seg)),
        "per_segment": by_seg.round(4).to_dict(orient="records"),
    }
    write_json("metrics/evaluate.json", result)
    write_parquet("data/predictions.parquet", out)
    _plots(out, by_seg, seg, best_rule)
    logger.info(
        "model %s %.3f vs best rule %s %.3f: gain %.2f%%; gate %s",
        metric,
        model_scores[metric],
        best_rule,
        rule_scores[metric],
        gain,
        "passed" if passed else "FAILED: " + "; ".join(reasons),
    )
    if not passed and params.evaluate.fail_on_gate:
        raise StageError("the model does not meet the success gate: " + "; ".join(reasons))


def _plots(out: pd.DataFrame, by_seg: pd.DataFrame, seg: str, best_rule: str) -> None:
    scored = out[out[TARGET].notna()]
    write_csv(
        "plots/predicted_vs_actual.csv",
        pd.DataFrame(
            {
                seg: scored[seg],
                "period": scored[PERIOD],
                "actual": scored[TARGET],
                "predicted": scored["prediction"].round(3),
            }
        ),
    )
    err = scored.assign(
        model_mae=(scored["prediction"] - scored[TARGET]).abs(),
        rule_mae=(scored[best_rule] - scored[TARGET]).abs(),
    )
    monthly = err.groupby(PERIOD, sort=True)[["model_mae", "rule_mae"]].mean().round(3)
    write_csv("plots/error_over_time.csv", monthly.reset_index())
    per_seg = by_seg.rename(columns={seg: "segment", "mae": "model_mae"})
    write_csv(
        "plots/error_by_segment.csv",
        per_seg[["segment", "model_mae", "rule_mae"]]
        .round(3)
        .sort_values("model_mae", ascending=False),
    )


if __name__ == "__main__":
    run_stage("evaluate", main)
