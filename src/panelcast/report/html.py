"""One static HTML page a business reader understands: ``reports/index.html``.

:func:`render_report` reads what the pipeline wrote (``metrics/*.json``, ``plots/*.csv``,
the forecasts and the validated table) and, when the production cycle has run, its state
directory (``<cycle.state_dir>/audit.jsonl``, ``live.parquet``, ``forecasts.parquet``),
and fills ``templates/report.html.j2``. The figures are plotnine plots inlined as SVG: the
page loads nothing from anywhere, so it opens offline. There is no timestamp anywhere, so
the same inputs give the same bytes.

A missing input file leaves its section with a sentence that names the file and the stage
that writes it; a file that is there but unreadable raises
:class:`~panelcast.core.errors.DataError` naming it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.config import Params, ProblemSpec
from ..core.errors import DataError
from ..core.io import atomic_write, read_json
from ..core.periods import FREQUENCIES, Calendar
from ..data.timeaxis import time_index
from . import figures
from .figures import adjective

__all__ = ["REPORT_PATH", "render_report", "write_report"]

logger = logging.getLogger(__name__)

#: Where the report is written, relative to the repository root.
REPORT_PATH = Path("reports") / "index.html"
#: Audit lines shown in the production cycle's history table (newest first).
AUDIT_ROWS = 24
#: Forecast rows shown in the table (the largest segments), and segments plotted.
FORECAST_ROWS, FORECAST_PANELS = 15, 4
#: Segments in the error-by-segment figure (the largest errors, and every losing one).
SEGMENT_ROWS = 40
#: The CPU seconds of each backtest policy, measured by the backtest stage (not a DVC
#: output: a measurement is not byte-reproducible); shown when the metrics hold none.
COSTS_PATH = Path("logs") / "backtest_costs.json"
#: Inputs named in the drift section.
DRIFT_ROWS = 8
MISSING = "-"
TEMPLATE = "report.html.j2"

_RULE_WORDS = {
    "last_value": "last value",
    "segment_month_mean": "seasonal average per {noun}",
    "drift_naive": "{season} x recent growth",
}
_STAT_WORDS = {"auto_ets": "AutoETS", "auto_arima": "AutoARIMA", "theta": "Theta"}
_SEASON_WORDS = {
    "H": "same hour yesterday",
    "D": "same weekday last week",
    "W": "same week last year",
    "M": "same month last year",
    "Q": "same quarter last year",
    "Y": "last year",
}
_DECISIONS = {
    "keep": "kept the model",
    "refused": "refused the new data",
    "per_segment": "retrained some segments",
    "retrain": "retrained",
}


# --------------------------------------------------------------------------- formatting


def _number(value: Any) -> float | None:
    """``value`` as a finite float, else None (missing, text, NaN)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt(value: Any, digits: int = 1) -> str:
    """``1,234.5``: a number with thousands separators; ``-`` when missing."""
    number = _number(value)
    if number is None:
        return MISSING if value is None or isinstance(value, float) else str(value)
    if float(number).is_integer() and isinstance(value, int):
        return f"{int(number):,}"
    return f"{number:,.{digits}f}"


def pct(value: Any, digits: int = 1) -> str:
    """``6.0 %`` for the share 0.06; ``-`` when missing."""
    number = _number(value)
    return MISSING if number is None else f"{100 * number:.{digits}f} %"


def _text(value: Any) -> str:
    if value is None or value == "":
        return MISSING
    return str(value)


def plural(noun: str) -> str:
    """``cities``, ``stores``, ``boxes``: the plural of an English noun (the usual rules)."""
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    if re.search(r"(s|x|z|ch|sh)$", noun):
        return noun + "es"
    return noun + "s"


def _get(data: Any, *keys: str | int) -> Any:
    """``data[k1][k2]...`` or None when any level is missing."""
    for key in keys:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


# --------------------------------------------------------------------------- inputs


class _Inputs:
    """The files the report reads, relative to ``root``; missing files are None."""

    def __init__(self, params: Params, root: Path) -> None:
        self.params, self.root = params, Path(root)
        self.missing: list[str] = []

    def path(self, name: str | Path) -> Path:
        return self.root / name

    def metric(self, stage: str) -> dict | None:
        path = self.path(self.params.paths.metric(stage))
        if not path.is_file():
            self.missing.append(str(self.params.paths.metric(stage)))
            return None
        data = read_json(path)
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a JSON object, found {type(data).__name__}.")
        return data

    def csv(self, name: str, text_columns: tuple[str, ...]) -> pd.DataFrame | None:
        path = self.path(self.params.paths.plot(name))
        if not path.is_file():
            self.missing.append(str(self.params.paths.plot(name)))
            return None
        try:
            # only an empty field is missing: a segment may be called "NA"
            return pd.read_csv(
                path,
                dtype={c: str for c in text_columns},
                keep_default_na=False,
                na_values=[""],
            )
        except (ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"{path}: not a readable CSV ({exc}).") from None

    def parquet(self, path: Path, columns: list[str] | None = None) -> pd.DataFrame:
        try:
            if columns is not None:
                import pyarrow.parquet as pq

                present = set(pq.read_schema(path).names)
                columns = [c for c in columns if c in present]
            return pd.read_parquet(path, columns=columns)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc}).") from None


def _audit(path: Path) -> tuple[list[dict], int]:
    """The audit log's records (in file order) and the count of unreadable lines."""
    if not path.is_file():
        return [], 0
    records, bad = [], 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            record = None
            logger.warning("%s line %d is not JSON (%s): left out of the report", path, number, exc)
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
            if record is not None:
                logger.warning(
                    "%s line %d is not a JSON object: left out of the report", path, number
                )
    return records, bad


# --------------------------------------------------------------------------- words


def _season_phrase(cal: Calendar) -> str:
    if cal.season is None or cal.season == FREQUENCIES[cal.frequency][1]:
        return _SEASON_WORDS[cal.frequency]
    return f"same point one season ({cal.count(cal.season_length)}) earlier"


def _forecaster_name(name: str, kind: str, problem: ProblemSpec, noun: str) -> str:
    """A short plain name for a rule or a statistical reference."""
    if kind == "statistical reference":
        return f"{_STAT_WORDS.get(name, name)} per {noun}"
    season = _season_phrase(problem.calendar)
    if name == "seasonal_naive":
        return season
    return _RULE_WORDS.get(name, name).format(noun=noun, season=season)


def _input_words(name: str, problem: ProblemSpec, noun: str) -> str:
    """A model input (a drift column) in plain words."""
    cal, label = problem.calendar, problem.label
    if m := re.fullmatch(r"lag_(\d+)", name):
        return f"{label}, {cal.count(int(m.group(1)))} earlier"
    if m := re.fullmatch(r"roll_(\d+)", name):
        return f"{label}, average of the last {cal.count(int(m.group(1)))}"
    if m := re.fullmatch(r"exo_(.+)", name):
        return f"{m.group(1)}, previous {cal.unit}"
    return {
        "log_level": f"recent level of {label}",
        "season_position": "time of year" if cal.frequency in ("M", "Q", "W") else "season",
        "target": f"{label} itself (the observed values)",
        "prediction": "the model's forecasts",
        "segment": f"the mix of {plural(noun)}",
    }.get(name, name)


def _policy_words(spec: Any, params: Params) -> str:
    cal, bt = params.problem.calendar, params.backtest
    if spec is None:
        return MISSING
    words = {
        "never": "never retrain",
        "every": f"retrain every {cal.count(spec.every_periods)}",
        "on_alarm": "retrain when the data drifts or the error rises",
        "on_error": (
            f"retrain when the error of the last {cal.count(bt.error_window_periods)} exceeds "
            f"{bt.error_factor:g} x the model's validation error"
        ),
    }.get(spec.kind, spec.kind)
    if spec.per_segment:
        words += f", {params.problem.segment or 'series'} by {params.problem.segment or 'series'}"
    return words


def _file(params: Params, stage: str) -> str:
    """``metrics/evaluate.json``: the metrics file of ``stage``, for messages."""
    return params.paths.metric(stage).as_posix()


def _success_text(params: Params) -> str:
    """``problem.success`` with the gate's numbers in place of their keys."""
    gate = params.evaluate.gate
    text = params.problem.success
    text = text.replace("evaluate.gate.max_wape", f"{gate.max_wape:g} ({pct(gate.max_wape)})")
    return text.replace("evaluate.gate.min_gain_pct", f"{gate.min_gain_pct:g}")


# --------------------------------------------------------------------------- sections


def _question(params: Params, evaluate: dict | None) -> dict:
    problem = params.problem
    cal, unit = problem.calendar, problem.unit_text
    gate = params.evaluate.gate
    target = f"{problem.label}{unit}"
    if problem.single_series:
        what = f"{target}, one {adjective(cal.unit)} series, one {cal.unit} ahead"
    else:
        what = f"{target} of each {problem.segment}, one {cal.unit} ahead"
    out: dict[str, Any] = {
        "question": problem.question,
        "what": what,
        "success": _success_text(params),
        "gate": f"WAPE at most {pct(gate.max_wape)}; MAE at least {gate.min_gain_pct:g} % below "
        "the best simple rule",
        "passed": None,
        "verdict": "",
        "details": [],
    }
    if evaluate is None:
        out["verdict"] = (
            f"No verdict yet: {_file(params, 'evaluate')} is missing (the evaluate stage "
            "writes it)."
        )
        return out
    model, rule = evaluate.get("model") or {}, evaluate.get("best_rule") or {}
    rule_name = rule.get("name")
    rule_words = (
        _forecaster_name(rule_name, "simple rule", problem, problem.segment or "series")
        if rule_name
        else "the best simple rule"
    )
    gain, wape = _number(evaluate.get("gain_pct")), _number(model.get("wape"))
    u = f" {problem.unit}" if problem.unit else ""
    errors = f"MAE {fmt(model.get('mae'))} against {fmt(rule.get('mae'))}{u} per forecast"
    passed = evaluate.get("gate_passed")
    out["passed"] = bool(passed) if passed is not None else None
    if gain is None:
        direction = "cannot be compared with the best simple rule"
    elif gain >= 0:
        direction = f"is {gain:.1f} % below the best simple rule ({rule_words})"
    else:
        direction = f"is {-gain:.1f} % above the best simple rule ({rule_words})"
    wape_words = (
        f"its WAPE, {pct(wape)}, is within the {pct(gate.max_wape)} limit"
        if wape is not None and wape <= gate.max_wape
        else f"its WAPE, {pct(wape)}, is above the {pct(gate.max_wape)} limit"
    )
    if passed:
        out["verdict"] = (
            f"Success: the model's error {direction}: {errors}, and {wape_words}. The target was "
            f"at least {gate.min_gain_pct:g} % below the rule."
        )
    elif passed is None:
        out["verdict"] = (
            f"No verdict: {_file(params, 'evaluate')} does not say whether the gate passed."
        )
    else:
        out["verdict"] = (
            f"Not a success: the model's error {direction} ({errors}); {wape_words}. The target "
            f"was at least {gate.min_gain_pct:g} % below the rule. Until the model meets it, "
            "the simple rule is the safer choice."
        )
        out["details"] = [str(f) for f in evaluate.get("gate_failures") or []]
    window = evaluate.get("window") or {}
    out["window"] = (
        f"Scored once on the test window {_text(window.get('start'))} .. "
        f"{_text(window.get('end'))} ({fmt(model.get('n'))} forecasts), never used for tuning."
    )
    return out


def _data(params: Params, collect: dict | None, validate: dict | None) -> dict:
    cal = params.problem.calendar
    out: dict[str, Any] = {"source": [], "validation": [], "warnings": [], "sentence": ""}
    if collect is None:
        out["source_missing"] = (
            f"{_file(params, 'collect')} is missing (the collect stage writes it)."
        )
    else:
        source = collect.get("source") or {}
        span = collect.get("time_span") or {}
        rows = [
            ("source", source.get("name")),
            ("licence", source.get("licence")),
            ("location", source.get("uri")),
            ("package version", source.get("package_version")),
            ("SHA-256 of the file", source.get("sha256")),
            ("size", f"{fmt(source.get('bytes'))} bytes" if source.get("bytes") else None),
            ("rows", fmt(collect.get("rows"))),
            ("columns", fmt(collect.get("columns"))),
            (
                "time span",
                f"{_text(span.get('first'))} .. {_text(span.get('last'))} "
                f"({cal.count(span['periods'])})"
                if isinstance(span.get("periods"), int)
                else None,
            ),
            (plural(params.problem.segment or "segment"), fmt(collect.get("segments"))),
        ]
        # the location is shown as text, never as a link
        out["source"] = [(k, _text(v)) for k, v in rows if v is not None]
        out["sentence"] = (
            f"The data comes from {_text(source.get('name'))}. Its SHA-256 fingerprint "
            "identifies these exact bytes: any change to the data changes it."
        )
    if validate is None:
        out["validation_missing"] = (
            f"{_file(params, 'validate')} is missing (the validate stage writes it)."
        )
        return out
    prepare = validate.get("prepare") or {}
    errors, warnings = validate.get("errors"), validate.get("warnings")
    passed = validate.get("passed")
    checks = (
        "passed" if passed else "failed" if passed is not None else MISSING
    ) + f" ({fmt(errors)} error(s), {fmt(warnings)} warning(s))"
    out["validation"] = [
        ("data contract", _text(validate.get("contract"))),
        ("checks", checks),
        ("rows checked", fmt(validate.get("rows"))),
        ("rows filtered out", fmt(prepare.get("rows_filtered_out"))),
        (plural(params.problem.segment or "segment"), fmt(prepare.get("segments"))),
        (f"missing {plural(cal.unit)} filled as gaps", fmt(prepare.get("periods_inserted"))),
        ("rows in the validated table", fmt(prepare.get("rows_out"))),
    ]
    out["warnings"] = [
        str(f.get("message") or f) if isinstance(f, dict) else str(f)
        for f in validate.get("failures") or []
    ]
    out["passed"] = passed
    inserted = fmt(prepare.get("periods_inserted"))
    checked = (
        f"It was checked against the data contract: the checks {checks.split(' ')[0]} with "
        f"{fmt(errors)} error(s) and {fmt(warnings)} warning(s); {inserted} missing "
        f"{plural(cal.unit)} were filled as gaps."
    )
    out["sentence"] = f"{out['sentence']} {checked}".strip()
    return out


def _rules(params: Params, evaluate: dict | None, baseline: dict | None) -> tuple[dict, Any]:
    problem = params.problem
    noun = problem.segment or "series"
    rows: list[dict[str, Any]] = []
    for key, kind in (("rules", "simple rule"), ("statistical", "statistical reference")):
        for name, s in ((baseline or {}).get(key) or {}).items():
            if not isinstance(s, dict):
                continue
            rows.append(
                {
                    "name": _forecaster_name(name, kind, problem, noun),
                    "kind": kind,
                    "description": _text(s.get("description")),
                    **{m: s.get(m) for m in ("mae", "rmse", "wape", "r2", "n")},
                }
            )
    model = (evaluate or {}).get("model")
    if isinstance(model, dict):
        strategy = (evaluate or {}).get("strategy")
        families = (evaluate or {}).get("models_by_family") or {}
        how = ", ".join(f"{k} for {fmt(v)}" for k, v in families.items()) if families else ""
        rows.append(
            {
                "name": "the model",
                "kind": "the model",
                "description": "the deployed model"
                + (
                    f" (strategy {strategy}" + (f": {how}" if how else "") + ")" if strategy else ""
                ),
                **{m: model.get(m) for m in ("mae", "rmse", "wape", "r2", "n")},
            }
        )
    rows.sort(key=lambda r: (_number(r["mae"]) is None, _number(r["mae"]) or 0.0))
    table = [
        {
            "name": r["name"],
            "kind": r["kind"],
            "description": r["description"],
            "mae": fmt(r["mae"]),
            "rmse": fmt(r["rmse"]),
            "wape": pct(r["wape"]),
            "r2": fmt(r["r2"], 3),
            "n": fmt(r["n"]),
            "model": r["kind"] == "the model",
        }
        for r in rows
    ]
    out: dict[str, Any] = {"table": table, "sentence": ""}
    best = (baseline or {}).get("best_rule")
    best_row = next((r for r in rows if r["kind"] == "simple rule" and r["mae"] is not None), None)
    if best_row is not None and isinstance(model, dict):
        unit = f" {problem.unit}" if problem.unit else ""
        out["sentence"] = (
            f"Before any model, simple rules are scored on the same forecasts. The best, "
            f"\u201c{best_row['name']}\u201d, misses by {fmt(best_row['mae'])}{unit} on average; "
            f"the model by {fmt(model.get('mae'))}{unit}. Statistical models fitted per {noun} "
            "are shown as references a forecaster would try."
        )
    elif best:
        out["sentence"] = "The rules were scored; the model's scores are missing."
    plot = None
    frame = pd.DataFrame([{k: r[k] for k in ("name", "kind", "mae")} for r in rows])
    if len(frame) and frame["mae"].map(_number).notna().any():
        frame["mae"] = frame["mae"].map(_number)
        plot = figures.comparison_plot(frame, problem)
    return out, plot


def _segments(params: Params, inputs: _Inputs, evaluate: dict | None) -> tuple[dict, Any, float]:
    problem = params.problem
    noun = problem.segment or "series"
    out: dict[str, Any] = {"single": problem.single_series, "losing": [], "sentence": ""}
    if problem.single_series:
        out["sentence"] = (
            "The table is one series: its error is the overall error of the section above."
        )
        return out, None, 0.0
    frame = inputs.csv("error_by_segment.csv", ("segment", "family"))
    if frame is None and evaluate and isinstance(evaluate.get("per_segment"), list):
        per = pd.DataFrame(evaluate["per_segment"])
        if problem.segment_column in per and "mae" in per and "rule_mae" in per:
            frame = per.rename(columns={problem.segment_column: "segment", "mae": "model_mae"})[
                ["segment", "model_mae", "rule_mae"]
            ]
    if frame is None or not {"segment", "model_mae", "rule_mae"} <= set(frame.columns):
        out["sentence"] = (
            f"No error per segment is available ({params.paths.plot('error_by_segment.csv')}, "
            "written by the "
            "evaluate stage, is missing)."
        )
        return out, None, 0.0
    frame = frame.assign(
        model_mae=pd.to_numeric(frame["model_mae"], errors="coerce"),
        rule_mae=pd.to_numeric(frame["rule_mae"], errors="coerce"),
    ).dropna(subset=["model_mae", "rule_mae"])
    n = len(frame)
    if n <= 1:
        out["single"] = True
        out["sentence"] = (
            "The table is one series: its error is the overall error of the section above."
        )
        return out, None, 0.0
    lose = frame[frame["model_mae"] > frame["rule_mae"]].sort_values(
        "rule_mae", ascending=False, kind="stable"
    )
    listed = (evaluate or {}).get("segments_losing_to_rule")
    names = [str(s) for s in listed] if isinstance(listed, list) else list(lose["segment"])
    out["losing"] = [
        {
            "segment": str(r.segment),
            "model": fmt(r.model_mae),
            "rule": fmt(r.rule_mae),
            "excess": pct((r.model_mae - r.rule_mae) / r.rule_mae) if r.rule_mae else MISSING,
        }
        for r in lose.itertuples()
    ]
    better = n - len(lose)
    nouns = plural(noun)
    out["sentence"] = f"The model beats the best simple rule in {better} of {n} {nouns}." + (
        f" It loses in {len(names)}: {', '.join(names[:20])}"
        + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        + ". There the rule's forecast may be the better choice."
        if names
        else ""
    )
    shown = frame.nlargest(SEGMENT_ROWS, "rule_mae", keep="first")
    shown = pd.concat([shown, lose]).drop_duplicates("segment")
    out["shown"] = (
        f"The {len(shown)} {nouns} with the largest errors of {n}, and every one where the "
        "rule wins."
        if len(shown) < n
        else f"All {n} {nouns}."
    )
    height = min(max(2.5, 0.2 * len(shown) + 1.4), 12.0)
    return out, figures.segment_error_plot(shown, problem, noun), height


def _forecasts(params: Params, inputs: _Inputs) -> tuple[dict, Any, float]:
    problem = params.problem
    seg, cal = problem.segment_column, problem.calendar
    noun = problem.segment or "series"
    state = inputs.path(Path(params.cycle.state_dir) / "forecasts.parquet")
    if state.is_file():
        path, origin = state, "the production cycle's latest forecasts"
    else:
        path, origin = inputs.path(params.paths.forecasts), "the predict stage"
    shown_path = path.relative_to(inputs.root) if path.is_relative_to(inputs.root) else path
    out: dict[str, Any] = {"rows": [], "levels": [], "sentence": "", "file": str(shown_path)}
    if not path.is_file():
        out["sentence"] = (
            f"No forecasts yet: {shown_path} is missing (the predict stage writes it)."
        )
        return out, None, 0.0
    fc = inputs.parquet(path)
    if seg not in fc.columns:
        if problem.single_series:
            fc.insert(0, seg, problem.target)
        else:
            raise DataError(
                f"{path}: expected the segment column {seg!r} (problem.segment), found columns "
                f"{list(fc.columns)}."
            )
    for column in ("period", "forecast"):
        if column not in fc.columns:
            raise DataError(
                f"{path}: expected a {column!r} column, found columns {list(fc.columns)}."
            )
    fc = fc.assign(period=fc["period"].astype(str), segment=fc[seg].astype(str))
    levels = sorted(
        {
            int(m.group(1))
            for c in fc.columns
            if (m := re.fullmatch(r"lower_(\d+)", str(c))) and f"upper_{m.group(1)}" in fc
        }
    )
    out["levels"] = levels
    size = (
        fc.groupby("segment", sort=True)["forecast"]
        .max()
        .sort_values(ascending=False, kind="stable")
    )
    order = list(size.index)
    ranked = fc.assign(_rank=fc["segment"].map({s: i for i, s in enumerate(order)}))
    ranked = ranked.sort_values(["_rank", "period"], kind="stable")
    top = ranked[ranked["_rank"] < FORECAST_ROWS]
    u = f" {problem.unit}" if problem.unit else ""
    for r in top.to_dict("records"):
        out["rows"].append(
            {
                "segment": r["segment"],
                "period": r["period"],
                "forecast": fmt(r["forecast"], 0),
                "intervals": [
                    f"{fmt(r.get(f'lower_{lv}'), 0)} .. {fmt(r.get(f'upper_{lv}'), 0)}"
                    for lv in levels
                ],
            }
        )
    n_seg = len(order)
    periods = sorted(fc["period"].unique(), key=cal.parse)
    out["total"] = (
        {"periods": [(p, fmt(fc.loc[fc["period"] == p, "forecast"].sum(), 0)) for p in periods]}
        if n_seg > 1
        else None
    )
    versions = (
        sorted(fc["model_version"].dropna().astype(str).unique()) if ("model_version" in fc) else []
    )
    hashes = sorted(fc["data_sha256"].dropna().astype(str).unique()) if "data_sha256" in fc else []
    first = top.iloc[0] if len(top) else None
    lead = ""
    if first is not None:
        where = "" if problem.single_series else f" for {first['segment']}"
        interval = (
            f" ({levels[0]} % interval: {fmt(first[f'lower_{levels[0]}'], 0)} .. "
            f"{fmt(first[f'upper_{levels[0]}'], 0)})"
            if levels
            else ""
        )
        lead = (
            f"In {first['period']}, {problem.label}{where} is forecast at "
            f"{fmt(first['forecast'], 0)}{u}{interval}."
        )
    explain = (
        f" An {levels[0]} % interval should hold the actual value {levels[0] // 10} times out of "
        "10."
        if levels and levels[0] % 10 == 0
        else ""
    )
    out["sentence"] = f"{lead}{explain} Source: {origin} ({shown_path})" + (
        "." if problem.single_series else f", {n_seg} {plural(noun) if n_seg != 1 else noun}."
    )
    out["provenance"] = (
        (f"Model version {', '.join(versions)}" if versions else "")
        + ("; " if versions and hashes else "")
        + (f"data SHA-256 {', '.join(h[:12] + '…' for h in hashes)}" if hashes else "")
    )
    out["more"] = (
        f"The {FORECAST_ROWS} largest of {n_seg} {plural(noun)} are listed; all are in "
        f"{shown_path}."
        if n_seg > FORECAST_ROWS
        else ""
    )
    # the plot: recent history of the largest segments and their forecasts
    plotted = order[:FORECAST_PANELS]
    history = _history(params, inputs, plotted, min(periods, key=cal.parse))
    if history is None:
        out["history_missing"] = (
            f"{params.paths.validated} is missing: the figure shows the forecasts alone."
        )
        history = pd.DataFrame({"segment": [], "period": [], "value": []})
    panel_fc = fc[fc["segment"].isin(plotted)]
    panel_fc = panel_fc.assign(segment=pd.Categorical(panel_fc["segment"], categories=plotted))
    history = history.assign(segment=pd.Categorical(history["segment"], categories=plotted))
    plot = figures.forecast_plot(history, panel_fc, problem, levels)
    out["plotted"] = (
        f"The {len(plotted)} {plural(noun)} with the largest forecasts." if len(plotted) > 1 else ""
    )
    rows = math.ceil(len(plotted) / 2)
    return out, plot, 1.6 + 2.6 * rows if len(plotted) > 1 else 4.0


def _history(
    params: Params, inputs: _Inputs, segments: list[str], first_forecast: str
) -> pd.DataFrame | None:
    """The latest observed periods of ``segments`` before ``first_forecast``."""
    problem = params.problem
    cal, seg = problem.calendar, problem.segment_column
    path = inputs.path(params.paths.validated)
    if not path.is_file():
        inputs.missing.append(str(params.paths.validated))
        return None
    table = inputs.parquet(path, [seg, *problem.time.columns, problem.target])
    if seg not in table.columns:
        table[seg] = problem.target
    missing = [c for c in (*problem.time.columns, problem.target) if c not in table.columns]
    if missing:
        raise DataError(
            f"{path}: expected the column(s) {missing} named in params.problem, found "
            f"{list(table.columns)}."
        )
    table = table[table[seg].astype(str).isin(segments)]
    ok, index = time_index(table, problem.time)
    end = cal.parse(first_forecast)
    length = min(max(3 * cal.season_length, 36), 180)
    keep = ok & (index < end) & (index >= end - length)
    frame = pd.DataFrame(
        {
            "segment": table[seg].astype(str).to_numpy()[keep],
            "t": index[keep],
            "value": pd.to_numeric(table[problem.target], errors="coerce").to_numpy()[keep],
        }
    ).sort_values(["segment", "t"], kind="stable")
    frame["period"] = [cal.format(t) for t in frame["t"]]
    return frame[["segment", "period", "value"]].reset_index(drop=True)


def _drift(params: Params, drift: dict | None) -> dict:
    problem = params.problem
    noun = problem.segment or "series"
    spec = params.drift
    out: dict[str, Any] = {"drifted": None, "sentence": "", "meaning": "", "todo": "", "rows": []}
    if drift is None:
        out["sentence"] = (
            f"No drift check yet: {_file(params, 'drift')} is missing (the drift stage writes it)."
        )
        return out
    window = drift.get("window") or {}
    span = f"{_text(window.get('start'))} .. {_text(window.get('end'))}"
    columns = drift.get("columns") or {}
    inputs = {k: v for k, v in columns.items() if isinstance(v, dict)}
    changed = [k for k, v in inputs.items() if v.get("drifted")]
    ranked = sorted(
        inputs.items(),
        key=lambda kv: (not kv[1].get("drifted"), -(_number(kv[1].get("effect")) or 0.0), kv[0]),
    )
    out["rows"] = [
        {
            "input": _input_words(name, problem, noun),
            "effect": fmt(c.get("effect"), 2),
            "changed": "yes" if c.get("drifted") else "no",
            "missing": (
                f"{pct(c.get('missing_reference'))} -> {pct(c.get('missing_current'))}"
                if c.get("missing_drifted")
                else ""
            ),
        }
        for name, c in ranked[:DRIFT_ROWS]
    ]
    drifted = drift.get("drifted")
    out["drifted"] = drifted
    share = drift.get("share_drifted")
    segs = drift.get("segments") or {}
    seg_words = ""
    if isinstance(segs, dict) and segs.get("checked") and not problem.single_series:
        seg_words = (
            f" In {fmt(segs.get('drifted'))} of {fmt(segs.get('checked'))} {plural(noun)} the "
            f"{problem.label.lower()} or the forecasts themselves changed."
        )
    key = " or ".join(_input_words(k, problem, noun) for k in spec.key_columns)
    top = "; ".join(r["input"] for r in out["rows"][:4] if r["changed"] == "yes")
    policy = next((p for p in params.backtest.policies if p.name == params.cycle.policy), None)
    if drifted:
        out["sentence"] = (
            f"The recent data ({span}) differs from the data the model was trained on: "
            f"{len(changed)} of {len(inputs)} model inputs changed ({pct(share, 0)}; the alarm "
            f"is at {pct(spec.dataset_share, 0)}, or any change in {key}). Most changed: "
            f"{top}.{seg_words}"
        )
        out["meaning"] = (
            "The world the model learned from has moved. Its forecasts may get worse even if "
            "they are good today; a change in the inputs alone does not prove that they are."
        )
        out["todo"] = (
            "Watch the live error against the simple rule (backtest and production sections "
            "below) and retrain on recent data when it rises"
            + (
                f": the production cycle does this with its policy \u201c{policy.name}\u201d "
                f"({_policy_words(policy, params)})."
                if policy is not None
                else "."
            )
        )
    elif drifted is None:
        out["sentence"] = f"{_file(params, 'drift')} does not say whether the data drifted."
    else:
        out["sentence"] = (
            f"No significant change: the recent data ({span}) looks like the data the model "
            f"was trained on ({len(changed)} of {len(inputs)} inputs changed, the alarm is at "
            f"{pct(spec.dataset_share, 0)}).{seg_words}"
        )
        out["meaning"] = "The model works on the kind of data it was trained on."
        out["todo"] = "Nothing to do; the check runs again with new data."
    out["method"] = (
        "An input counts as changed only when the change is large enough (in units of its "
        "spread in the training data) and statistically significant."
    )
    return out


def _backtest(params: Params, inputs: _Inputs, backtest: dict | None) -> tuple[dict, Any]:
    problem = params.problem
    cal = problem.calendar
    out: dict[str, Any] = {"rows": [], "sentence": "", "named": [], "cpu": False}
    if backtest is None or not isinstance(backtest.get("policies"), dict):
        out["sentence"] = (
            f"No backtest yet: {_file(params, 'backtest')} is missing (the backtest stage "
            "writes it)."
        )
        return out, None
    policies = {k: v for k, v in backtest["policies"].items() if isinstance(v, dict)}
    specs = {p.name: p for p in params.backtest.policies}
    named = list((backtest.get("named_periods") or {}).keys()) or [
        p.name for p in problem.named_periods
    ]
    named = [n for n in named if any(f"{n}_mae" in v for v in policies.values())]
    out["named"] = named
    # CPU seconds only when the metrics hold them: the backtest's own measurement
    # (COSTS_PATH) varies from run to run, and the same inputs must give the same page
    cpu = {k: v.get("cpu_s") for k, v in policies.items() if "cpu_s" in v}
    if not cpu:
        out["cpu_note"] = (
            f"The cost is counted in model fits; the CPU time each policy cost is measured "
            f"by the backtest stage in {COSTS_PATH.as_posix()} (a measurement, left out of "
            "this page so that the same inputs give the same page)."
        )
    out["cpu"] = bool(cpu)
    out["segment_refits"] = any(_number(v.get("segment_refits")) for v in policies.values())
    out["gate_refused"] = any(_number(v.get("gate_refused")) for v in policies.values())
    for name, s in policies.items():
        out["rows"].append(
            {
                "policy": name,
                "rule": _policy_words(specs.get(name), params),
                "cycle": name == params.cycle.policy,
                "mae": fmt(s.get("mae")),
                "wape": pct(s.get("wape")),
                "named": [fmt(s.get(f"{n}_mae")) for n in named],
                "retrains": fmt(s.get("retrains")),
                "promotions": fmt(s.get("promotions")),
                "fits": fmt(s.get("fits")),
                "segment_refits": fmt(s.get("segment_refits")),
                "gate_refused": fmt(s.get("gate_refused")),
                "cpu": fmt(cpu.get(name)),
            }
        )
    scored = {k: _number(v.get("mae")) for k, v in policies.items()}
    scored = {k: v for k, v in scored.items() if v is not None}
    replayed = backtest.get("replayed") or {}
    span = f"{_text(replayed.get('start'))} .. {_text(replayed.get('end'))}"
    u = f" {problem.unit}" if problem.unit else ""
    if scored:
        best = min(scored, key=lambda k: (scored[k], k))
        never = next((k for k, s in specs.items() if s.kind == "never" and k in scored), None)
        versus = (
            f" against {fmt(scored[never])}{u} when never retraining"
            if never and never != best
            else ""
        )
        out["sentence"] = (
            f"Production replayed {cal.unit} by {cal.unit} over {span}: each policy decides "
            f"when to retrain, using only what was known at the time. \u201c{best}\u201d "
            f"({_policy_words(specs.get(best), params)}) had the lowest error, MAE "
            f"{fmt(scored[best])}{u}{versus}, for {fmt(policies[best].get('fits'))} model fits."
        )
    # the figure: the per-period error of each policy and its retrain events
    wide = inputs.csv("backtest_error.csv", ("period",))
    if wide is None or "period" not in wide.columns:
        return out, None
    rows = []
    for name in policies:
        column = f"{name}_mae"
        if column not in wide.columns:
            continue
        events = {
            str(e.get("period")): "promoted" if e.get("promoted") else "kept"
            for e in policies[name].get("events") or []
            if isinstance(e, dict)
        }
        rows.append(
            pd.DataFrame(
                {
                    "period": wide["period"].astype(str),
                    "policy": name,
                    "mae": pd.to_numeric(wide[column], errors="coerce"),
                    "retrain": wide["period"].astype(str).map(events).fillna(""),
                }
            )
        )
    if not rows:
        return out, None
    periods = pd.concat(rows, ignore_index=True)
    periods["policy"] = pd.Categorical(periods["policy"], categories=list(policies))
    named_text = "; ".join(
        f"the grey band is the {p.name.replace('_', ' ')} ({p.start} .. {p.end})"
        for p in problem.named_periods
    )
    out["caption"] = (
        f"Each line is one policy's average error per {cal.unit}. A circle marks a retrain after "
        "which the new model was deployed; a cross, a retrain where the new model was not "
        "better on the latest known periods, so the old one was kept."
        + (f" {named_text[0].upper()}{named_text[1:]}." if named_text else "")
    )
    return out, figures.backtest_plot(periods, problem)


def _decision(record: dict) -> str:
    decision = record.get("decision")
    retrain = record.get("retrain")
    if decision in ("retrain", "per_segment") and isinstance(retrain, dict):
        if retrain.get("promoted"):
            return f"{_DECISIONS[decision]}: new model deployed"
        if retrain.get("promoted") is False:
            return f"{_DECISIONS[decision]}: old model kept (the new one was not better)"
    return _DECISIONS.get(decision, _text(decision))


def _cycle(params: Params, inputs: _Inputs) -> tuple[dict | None, Any]:
    problem = params.problem
    state = Path(params.cycle.state_dir)
    records, bad = _audit(inputs.path(state / "audit.jsonl"))
    if not records:
        return None, None
    u = f" {problem.unit}" if problem.unit else ""
    latest = records[-1]
    live, drift, retrain = (
        latest.get("live") or {},
        latest.get("drift") or {},
        latest.get("retrain") or {},
    )
    facts = [
        ("period", _text(latest.get("period"))),
        ("decision", _decision(latest)),
        ("why", _text(latest.get("reason"))),
        ("policy", _text(latest.get("policy"))),
        (
            "live error",
            f"MAE {fmt(_get(live, 'mae'))}{u} (simple rule {fmt(_get(live, 'rule_mae'))}), WAPE "
            f"{pct(_get(live, 'wape'))} over {fmt(_get(live, 'n'))} forecasts",
        ),
        (
            "recent error",
            f"WAPE {pct(_get(live, 'window_wape'))} (at validation "
            f"{pct(_get(live, 'validation_wape'))})",
        ),
        (
            "drift",
            (
                "yes"
                if drift.get("drifted")
                else "no"
                if drift.get("drifted") is not None
                else MISSING
            )
            + f" ({pct(drift.get('share_drifted'), 0)} of the inputs changed)",
        ),
    ]
    if isinstance(retrain, dict) and retrain:
        facts.append(
            (
                "retrain",
                f"experiment {_text(retrain.get('experiment'))}: new WAPE "
                f"{pct(retrain.get('challenger_wape'))} against {pct(retrain.get('champion_wape'))}"
                f", gate {'passed' if retrain.get('gate_passed') else 'not passed'}, "
                + ("deployed" if retrain.get("promoted") else "not deployed"),
            )
        )
    facts += [
        ("model", f"{_text(latest.get('model_before'))} -> {_text(latest.get('model_after'))}"),
        ("commit", _text(latest.get("commit"))),
    ]
    rows = []
    for r in reversed(records[-AUDIT_ROWS:]):
        live_r = r.get("live") if isinstance(r.get("live"), dict) else {}
        durations = r.get("durations_s") if isinstance(r.get("durations_s"), dict) else {}
        total = sum(v for v in map(_number, durations.values()) if v is not None)
        rows.append(
            {
                "period": _text(r.get("period")),
                "decision": _decision(r),
                "reason": _text(r.get("reason")),
                "mae": fmt(live_r.get("mae")),
                "rule_mae": fmt(live_r.get("rule_mae")),
                "wape": pct(live_r.get("wape")),
                "drift": pct(_get(r, "drift", "share_drifted"), 0),
                "model": _text(r.get("model_after")),
                "seconds": fmt(total) if durations else MISSING,
            }
        )
    out: dict[str, Any] = {
        "facts": facts,
        "rows": rows,
        "count": len(records),
        "bad": bad,
        "sentence": (
            f"The production cycle runs once per new {problem.calendar.unit}: it scores the "
            "forecasts of the period that just became known, checks drift and the error, and "
            f"decides whether to retrain. Latest, {_text(latest.get('period'))}: "
            f"{_decision(latest)}. Why: {_text(latest.get('reason'))}"
        ),
    }
    plot = None
    live_path = inputs.path(state / "live.parquet")
    if live_path.is_file():
        frame = inputs.parquet(live_path)
        needed = {"period", "actual", "forecast", "rule_forecast"}
        if needed <= set(frame.columns):
            frame = frame.dropna(subset=["actual"])
            frame = frame.assign(
                period=frame["period"].astype(str),
                model=(frame["forecast"] - frame["actual"]).abs(),
                rule=(frame["rule_forecast"] - frame["actual"]).abs(),
            )
            per = frame.groupby("period", sort=True)[["model", "rule"]].mean().reset_index()
            per = per.sort_values("period", key=lambda s: s.map(problem.calendar.parse))
            long = pd.concat(
                [
                    per.assign(forecaster="the model", mae=per["model"]),
                    per.assign(forecaster="simple rule", mae=per["rule"]),
                ],
                ignore_index=True,
            )[["period", "forecaster", "mae"]]
            if len(long):
                plot = figures.live_error_plot(long, problem)
        else:
            out["live_missing"] = (
                f"{state / 'live.parquet'}: expected the columns {sorted(needed)}, found "
                f"{list(frame.columns)}; no live figure."
            )
    return out, plot


# --------------------------------------------------------------------------- render


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def render_report(params: Params, root: Path = Path(".")) -> str:
    """The report's HTML text, from the pipeline's outputs under ``root``.

    Raises :class:`~panelcast.core.errors.DataError` naming a file that is there but
    unreadable; a missing file leaves a sentence in its section instead.
    """
    from markupsafe import Markup

    started = time.perf_counter()
    root = Path(root)
    problem = params.problem
    inputs = _Inputs(params, root)
    evaluate = inputs.metric("evaluate")
    baseline = inputs.metric("baseline")
    collect = inputs.metric("collect")
    validate = inputs.metric("validate")
    drift = inputs.metric("drift")
    backtest = inputs.metric("backtest")

    svgs: list[Markup | None] = []

    def figure(plot: Any, height: float) -> Markup | None:
        if plot is None:
            return None
        svgs.append(Markup(figures.svg_markup(plot, 9.0, height, prefix=f"fig{len(svgs) + 1}")))
        return svgs[-1]

    question = _question(params, evaluate)
    data = _data(params, collect, validate)
    rules, rules_plot = _rules(params, evaluate, baseline)
    rules["figure"] = figure(rules_plot, 1.4 + 0.32 * len(rules["table"]))
    segments, segment_plot, height = _segments(params, inputs, evaluate)
    segments["figure"] = figure(segment_plot, height)
    forecasts, forecast_plot, height = _forecasts(params, inputs)
    forecasts["figure"] = figure(forecast_plot, height)
    drift_words = _drift(params, drift)
    backtest_words, backtest_plot = _backtest(params, inputs, backtest)
    backtest_words["figure"] = figure(backtest_plot, 5.6)
    cycle, live_plot = _cycle(params, inputs)
    if cycle is not None:
        cycle["figure"] = figure(live_plot, 3.8)

    sections = [
        ("question", "The question and the verdict"),
        ("data", "The data: where it comes from and how it was checked"),
        ("rules", "Simple rules versus the model"),
        ("segments", f"Error by {problem.segment or 'series'}"),
        ("forecasts", "Forecasts for the next " + plural(problem.calendar.unit)),
        ("drift", "Has the data changed?"),
        ("backtest", "When to retrain: the backtest"),
    ]
    if cycle is not None:
        sections.append(("cycle", "Production cycle"))
    html = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=f"{problem.label}: forecast report",
            problem=problem,
            unit=problem.unit or problem.label,
            sections=sections,
            question=question,
            data=data,
            rules=rules,
            segments=segments,
            forecasts=forecasts,
            drift=drift_words,
            backtest=backtest_words,
            cycle=cycle,
            missing=sorted(set(inputs.missing)),
        )
    )
    logger.info(
        "report rendered: %d section(s), %d figure(s), %.0f KB in %.1f s%s",
        len(sections),
        len(svgs),
        len(html.encode("utf-8")) / 1024,
        time.perf_counter() - started,
        f"; missing inputs: {', '.join(sorted(set(inputs.missing)))}" if inputs.missing else "",
    )
    return html


def write_report(params: Params, root: Path = Path("."), out: Path | None = None) -> Path:
    """Render the report and write it atomically to ``out`` (default
    ``root/reports/index.html``); returns the path written."""
    root = Path(root)
    path = Path(out) if out is not None else root / REPORT_PATH
    html = render_report(params, root)
    data = html.encode("utf-8")

    def writer(tmp: Path) -> None:
        tmp.write_bytes(data)
        tmp.chmod(0o644)  # a page to be read by others (the temporary file is private)

    atomic_write(path, writer)
    logger.info("report written: %s (%.0f KB)", path, len(data) / 1024)
    return path
