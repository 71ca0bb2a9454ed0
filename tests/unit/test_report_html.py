"""The static HTML report: offline, complete, honest about the verdict, byte-stable.

Rendered on the repository's committed outputs (metrics/, plots/, data/), on copies of
them in a temporary directory (a failing gate, the production cycle's files), and on a
synthetic single series (quarterly, no segment column, a few inputs missing).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panelcast.core.config import load_params
from panelcast.core.errors import DataError
from panelcast.report import figures
from panelcast.report.figures import RETRAIN_LABELS, backtest_figure, backtest_plot
from panelcast.report.html import COSTS_PATH, REPORT_PATH, render_report, write_report

from ..conftest import ROOT

#: The pipeline's outputs the report reads: metrics/ and plots/ as committed, and the two
#: data files (DVC outputs, absent from a fresh clone) rebuilt by the autouse fixture below.
OUT = ROOT


def _build_outputs(dest: Path) -> Path:
    """The report's inputs in ``dest``: the committed params, metrics and plots; the
    validated table from the real source (collect and validate, as the stages do); the
    forecasts from the committed plots/forecasts.csv (the predict stage's table, rounded)."""
    from panelcast.data.contract import load_contract
    from panelcast.pipeline.collect import collect
    from panelcast.pipeline.validate import validate

    shutil.copy(ROOT / "params.yaml", dest / "params.yaml")
    for folder in ("metrics", "plots"):
        shutil.copytree(ROOT / folder, dest / folder)
    params = load_params(ROOT / "params.yaml")
    frame, _ = collect(params.source, params.problem)
    contract = load_contract(ROOT / "contract.yaml", calendar=params.problem.calendar)
    table, _, text = validate(frame, contract, params.problem, params.prepare, "source", "contract")
    assert table is not None, text
    (dest / "data").mkdir()
    table.to_parquet(dest / "data" / "validated.parquet")
    forecasts = pd.read_csv(ROOT / "plots" / "forecasts.csv")
    sha = json.loads((ROOT / "metrics" / "collect.json").read_text())["source"]["sha256"]
    forecasts.assign(data_sha256=sha).to_parquet(dest / "data" / "forecasts.parquet")
    (dest / "production").mkdir()
    (dest / "production" / "audit.jsonl").write_text("", encoding="utf-8")
    return dest


@pytest.fixture(autouse=True, scope="module")
def _outputs(tmp_path_factory):
    global OUT
    OUT = _build_outputs(tmp_path_factory.mktemp("outputs"))
    yield


pytestmark = pytest.mark.xdist_group("report_html")

SECTIONS = ("question", "data", "rules", "segments", "forecasts", "drift", "backtest")
#: Anything the browser would fetch: src/href/xlink:href to a URL, CSS url(), @import.
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href|xlink:href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:url\(\s*["']?\s*(?:https?:)?//)|@import""",
    re.IGNORECASE,
)


def _verdict(html: str) -> str:
    match = re.search(r'<div class="verdict [a-z]+" id="verdict">(.*?)</div>', html, re.DOTALL)
    assert match, "the verdict box is missing"
    return " ".join(match.group(1).split())


def _section(html: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', html, re.DOTALL)
    assert match, f"section {name!r} is missing"
    return match.group(1)


def _copy_inputs(dest: Path) -> Path:
    """The files the report reads, copied from the repository (never written there)."""
    shutil.copy(OUT / "params.yaml", dest / "params.yaml")
    for folder in ("metrics", "plots"):
        shutil.copytree(OUT / folder, dest / folder)
    (dest / "data").mkdir()
    for name in ("forecasts.parquet", "validated.parquet"):
        shutil.copy(OUT / "data" / name, dest / "data" / name)
    (dest / "production").mkdir()
    (dest / "production" / "audit.jsonl").write_text("", encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def repo_html(_outputs) -> str:
    return render_report(load_params(OUT / "params.yaml"), OUT)


@pytest.fixture(scope="module")
def written(_outputs, tmp_path_factory) -> Path:
    """The report written by :func:`write_report` into a copy of the inputs."""
    root = _copy_inputs(tmp_path_factory.mktemp("report_inputs"))
    return write_report(load_params(root / "params.yaml"), root)


# --------------------------------------------------------------------------- repository


def test_the_page_loads_nothing_from_the_network(repo_html):
    assert not EXTERNAL.findall(repo_html)
    for tag in ("<script", "<link", "<img", "<iframe", "<object", "@font-face"):
        assert tag not in repo_html.lower(), tag
    assert repo_html.count("<svg") >= 4  # the figures are inline


def test_every_section_is_there_with_its_figures(repo_html):
    for name in SECTIONS:
        assert f'href="#{name}"' in repo_html  # in the table of contents too
        body = _section(repo_html, name)
        assert re.search(r"<p>\s*\S", body) or "verdict" in body, name
    for name in ("rules", "segments", "forecasts", "backtest"):
        assert "<svg" in _section(repo_html, name), name


def test_the_verdict_says_what_the_gate_says(repo_html):
    evaluate = json.loads((OUT / "metrics" / "evaluate.json").read_text())
    verdict = _verdict(repo_html)
    gain = f"{evaluate['gain_pct']:.1f} %"
    if evaluate["gate_passed"]:
        assert verdict.startswith("Success:") and "Not a success" not in repo_html
    else:
        assert verdict.startswith("Not a success") and "Success:" not in repo_html
    assert gain in verdict
    assert f"{100 * evaluate['model']['wape']:.1f} %" in verdict


def test_the_numbers_come_from_the_metrics(repo_html):
    collect = json.loads((OUT / "metrics" / "collect.json").read_text())
    baseline = json.loads((OUT / "metrics" / "baseline.json").read_text())
    evaluate = json.loads((OUT / "metrics" / "evaluate.json").read_text())
    data = _section(repo_html, "data")
    assert collect["source"]["sha256"] in data and collect["source"]["licence"] in data
    rules = _section(repo_html, "rules")
    for s in [*baseline["rules"].values(), *baseline.get("statistical", {}).values()]:
        assert f"{s['mae']:,.1f}" in rules
    segments = _section(repo_html, "segments")
    for name in evaluate["segments_losing_to_rule"]:
        assert name in segments
    forecasts = pd.read_parquet(OUT / "data" / "forecasts.parquet")
    largest = forecasts.loc[forecasts["forecast"].idxmax()]
    assert f"{largest['forecast']:,.0f}" in _section(repo_html, "forecasts")


def test_the_backtest_speaks_plain_words(repo_html):
    body = _section(repo_html, "backtest")
    backtest = json.loads((OUT / "metrics" / "backtest.json").read_text())
    for name, s in backtest["policies"].items():
        assert f">{name}" in body and f"{s['mae']:,.1f}" in body
    assert "new model deployed" in body and "old one was kept" in body
    # the legend's labels are drawn as paths; matplotlib leaves each text as a comment
    assert "<!-- retrained: new model deployed -->" in body
    assert ">kept<" not in body and "<!-- kept -->" not in body
    has_cpu = any("cpu_s" in s for s in backtest["policies"].values())
    assert ("CPU seconds" in body) == has_cpu


def test_the_cycle_section_follows_the_audit_log(repo_html):
    audit = OUT / "production" / "audit.jsonl"
    lines = audit.read_text().strip() if audit.is_file() else ""
    assert ('<section id="cycle">' in repo_html) == bool(lines)


def test_the_same_inputs_give_the_same_bytes(repo_html):
    assert render_report(load_params(OUT / "params.yaml"), OUT) == repo_html
    assert not re.search(r"\b20\d\d-\d\d-\d\dT\d\d:\d\d", repo_html)  # no timestamp
    assert "<metadata>" not in repo_html


# --------------------------------------------------------------------------- copies


def test_write_report_writes_atomically_where_asked(written, repo_html, tmp_path):
    root = written.parents[1]
    assert written == root / REPORT_PATH and written.is_file()
    assert not list(written.parent.glob(".*.tmp"))
    other = write_report(load_params(root / "params.yaml"), root, tmp_path / "elsewhere" / "r.html")
    assert other == tmp_path / "elsewhere" / "r.html"
    assert other.read_bytes() == written.read_bytes()
    html = written.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    # the copy's audit log is empty: no cycle section, not even in the table of contents
    assert (root / "production" / "audit.jsonl").read_text() == ""
    assert '<section id="cycle">' not in html and 'href="#cycle"' not in html


def test_a_failed_gate_is_said_plainly(tmp_path):
    root = _copy_inputs(tmp_path)
    evaluate = json.loads((root / "metrics" / "evaluate.json").read_text())
    evaluate.update(gate_passed=False, gain_pct=2.5, gate_failures=["gain 2.5 % < 5.0 %"])
    (root / "metrics" / "evaluate.json").write_text(json.dumps(evaluate))
    html = render_report(load_params(root / "params.yaml"), root)
    verdict = _verdict(html)
    assert verdict.startswith("Not a success") and "2.5 % below" in verdict
    assert "Success:" not in html and "gain 2.5 % &lt; 5.0 %" in html
    assert 'class="verdict fail" id="verdict"' in html


def _audit_line(i: int, decision: str, promoted: bool | None = None) -> dict:
    retrain = None
    if promoted is not None:
        retrain = {
            "experiment": f"cycle-{i}",
            "challenger_wape": 0.05,
            "champion_wape": 0.07,
            "gate_passed": True,
            "promoted": promoted,
        }
    return {
        "period": f"{2013 + i // 12}-{i % 12 + 1:02d}",
        "decision": decision,
        "reason": f"reason number {i}",
        "policy": "on_error",
        "live": {"mae": 30.0 + i, "wape": 0.06, "n": 46, "rule_mae": 40.0 + i},
        "drift": {"drifted": i % 2 == 0, "share_drifted": 0.1},
        "retrain": retrain,
        "model_before": f"m{i}",
        "model_after": f"m{i + 1}" if promoted else f"m{i}",
        "commit": None,
        "durations_s": {"score": 1.5, "drift": 0.5},
    }


def test_the_cycle_section_appears_with_audit_lines(tmp_path):
    root = _copy_inputs(tmp_path)
    params = load_params(root / "params.yaml")
    records = [_audit_line(i, "keep") for i in range(29)]
    records.append(_audit_line(29, "retrain", promoted=False))
    records.append({"period": "2015-08"})  # lenient: most keys missing
    lines = [json.dumps(r) for r in records]
    lines.insert(3, "{not json")
    (root / "production" / "audit.jsonl").write_text("\n".join(lines) + "\n")
    live = pd.DataFrame(
        {
            "city": ["A", "B"] * 6,
            "period": [f"2015-{m:02d}" for m in range(1, 7) for _ in range(2)],
            "actual": np.arange(12.0) + 100,
            "forecast": np.arange(12.0) + 103,
            "rule_forecast": np.arange(12.0) + 90,
            "model_version": "v1",
        }
    )
    live.to_parquet(root / "production" / "live.parquet", index=False)
    html = render_report(params, root)
    body = _section(html, "cycle")
    assert 'href="#cycle"' in html and "<svg" in body
    periods = re.findall(r"<tr><td>(20\d\d-\d\d)</td>", body)
    assert periods[0] == "2015-08" and periods[1] == "2015-06"  # newest first
    assert len(periods) == 24
    assert "retrained: old model kept (the new one was not better)" in body
    assert "reason number 29" in body and "1 line(s) of the audit log" in body
    assert "reason number 5" not in body  # older than the 24 rows shown
    assert not EXTERNAL.findall(html)


def test_the_production_forecasts_take_precedence(tmp_path):
    root = _copy_inputs(tmp_path)
    forecasts = pd.read_parquet(root / "data" / "forecasts.parquet")
    forecasts = forecasts.assign(period="2015-09", forecast=forecasts["forecast"] + 12345.0)
    forecasts.to_parquet(root / "production" / "forecasts.parquet", index=False)
    body = _section(render_report(load_params(root / "params.yaml"), root), "forecasts")
    assert "the production cycle&#39;s latest forecasts" in body and "2015-09" in body
    assert "production/forecasts.parquet" in body
    assert f"{forecasts['forecast'].max():,.0f}" in body


def test_cpu_seconds_come_from_the_metrics_only(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "svg_markup", lambda *a, **k: "<svg></svg>\n")
    root = _copy_inputs(tmp_path)
    params = load_params(root / "params.yaml")
    before = render_report(params, root)
    assert "CPU seconds" not in _section(before, "backtest")
    # the backtest's measurement file varies from run to run: it never changes the page
    (root / "logs").mkdir()
    (root / COSTS_PATH).write_text(json.dumps({"policies": {"never": {"cpu_s": 123.25}}}))
    assert render_report(params, root) == before
    # a cpu_s in the metrics themselves is shown
    backtest = json.loads((root / "metrics" / "backtest.json").read_text())
    for policy in backtest["policies"].values():
        policy["cpu_s"] = 7777.0
    (root / "metrics" / "backtest.json").write_text(json.dumps(backtest))
    body = _section(render_report(params, root), "backtest")
    assert "CPU seconds" in body and "7,777.0" in body


def test_an_unreadable_metrics_file_is_named(tmp_path):
    root = _copy_inputs(tmp_path)
    (root / "metrics" / "drift.json").write_text("{broken")
    with pytest.raises(DataError, match=r"drift\.json"):
        render_report(load_params(root / "params.yaml"), root)


def test_the_stage_writes_the_report(written, tmp_path):
    root = _copy_inputs(tmp_path)
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "PANELCAST_LOG_LEVEL": "INFO"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "report.py")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "report written: reports/index.html" in run.stderr
    # the same inputs as the copy write_report wrote to: the same bytes
    assert (root / "reports" / "index.html").read_bytes() == written.read_bytes()


# --------------------------------------------------------------------------- one series


def _single_series(root: Path) -> Path:
    """A quarterly single series (examples/macrodata params), outputs made up, some missing."""
    shutil.copy(ROOT / "examples" / "macrodata" / "params.yaml", root / "params.yaml")
    params = load_params(root / "params.yaml")
    assert params.problem.single_series and params.problem.calendar.frequency == "Q"
    (root / "metrics").mkdir()
    (root / "plots").mkdir()
    (root / "data").mkdir()
    years = np.repeat(np.arange(1999, 2010), 4)[:-1]
    quarters = np.tile(np.arange(1, 5), 11)[:-1]
    gdp = 11000 + 50 * np.arange(len(years)) - 400 * ((years == 2009) | (years == 2008))
    pd.DataFrame({"year": years, "quarter": quarters, "realgdp": gdp.astype(float)}).to_parquet(
        root / "data" / "validated.parquet", index=False
    )
    pd.DataFrame(
        {
            "series": ["realgdp"],
            "period": ["2009-Q4"],
            "forecast": [12650.0],
            "lower_80": [12500.0],
            "upper_80": [12800.0],
            "lower_95": [12400.0],
            "upper_95": [12900.0],
            "model_version": ["abc"],
            "data_sha256": ["f" * 64],
        }
    ).to_parquet(root / "data" / "forecasts.parquet", index=False)
    metrics = {
        "evaluate": {
            "model": {"n": 20, "mae": 55.0, "wape": 0.0045},
            "best_rule": {"name": "last_value", "mae": 80.0},
            "gain_pct": 31.25,
            "gate_passed": False,
            "gate_failures": ["WAPE 0.0045 > 0.002"],
        },
        "baseline": {"rules": {"last_value": {"mae": 80.0, "wape": 0.0065, "n": 20}}},
        "collect": {"source": {"name": "made up"}, "rows": 43},
        "validate": {"rows": 43, "passed": True, "errors": 0, "warnings": 0},
        "backtest": {
            "policies": {
                "never": {"mae": 70.0, "wape": 0.006, "retrains": 0, "fits": 1, "cpu_s": 0.4},
                "every_4": {"mae": 60.0, "wape": 0.005, "retrains": 4, "fits": 5, "cpu_s": 1.9},
            },
            "replayed": {"start": "2005-Q1", "end": "2009-Q3"},
        },
    }
    for name, data in metrics.items():
        (root / "metrics" / f"{name}.json").write_text(json.dumps(data))
    periods = [f"{y}-Q{q}" for y in range(2005, 2010) for q in range(1, 5)][:-1]
    pd.DataFrame(
        {
            "period": periods,
            "never_mae": np.linspace(40, 90, len(periods)),
            "every_4_mae": np.linspace(40, 70, len(periods)),
        }
    ).to_csv(root / "plots" / "backtest_error.csv", index=False)
    return root


def test_a_single_series_renders(tmp_path):
    root = _single_series(tmp_path)
    params = load_params(root / "params.yaml")
    html = render_report(params, root)
    for name in SECTIONS:
        _section(html, name)
    assert '<section id="cycle">' not in html
    assert _verdict(html).startswith("Not a success") and "WAPE 0.0045 &gt; 0.002" in html
    assert "one series" in _section(html, "segments") and "<svg" not in _section(html, "segments")
    forecasts = _section(html, "forecasts")
    assert "12,650" in forecasts and "2009-Q4" in forecasts and "<svg" in forecasts
    assert "<!-- great recession -->" in forecasts  # the named period is shaded and labelled
    assert "billion 2005 dollars" in html
    assert "No drift check yet" in _section(html, "drift")
    backtest = _section(html, "backtest")
    assert "CPU seconds" in backtest and "1.9" in backtest and "<svg" in backtest
    assert "metrics/drift.json" in html.split("<footer>")[1]  # missing inputs are named
    assert not EXTERNAL.findall(html)
    assert render_report(params, root) == html


# --------------------------------------------------------------------------- the figure


def test_the_backtest_legend_is_in_plain_words(params):
    rows = pd.DataFrame(
        {
            "period": ["2008-06", "2008-07", "2008-08"],
            "policy": "every_3",
            "mae": [3.0, 4.0, 5.0],
            "retrain": ["", "kept", "promoted"],
        }
    )
    plot = backtest_plot(rows, params.problem)
    shape = next(s for s in plot.scales if "shape" in s.aesthetics)
    assert shape.labels == RETRAIN_LABELS
    assert "kept" not in RETRAIN_LABELS["kept"].split(":")[0]
    assert backtest_figure(rows, params.problem).startswith(b"\x89PNG")
