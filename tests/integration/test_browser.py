"""The project's pages in a real browser: headless Chromium draws them, offline.

Each page is opened from disk in Chromium whose every request goes to a trap proxy
(browser_helpers.TrapProxy): the page must draw something (its screenshot is not blank) and
ask for nothing outside itself. A control page with an external image shows the trap sees
such a request, so these tests can fail.

- the business report (panelcast.report.html.write_report) on the repository's committed
  metrics/ and plots/;
- `dvc plots diff` with the offline template (build/plots/template.html, `make
  plots-template`: Vega, Vega-Lite and Vega-Embed from package-lock.json inlined), in a
  clone of the repository.

`make test` installs Chromium (`make browser`) and builds the template first.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from panelcast.core.config import load_params

from ..conftest import ROOT, run
from .browser_helpers import TrapProxy, ink, render, tracked_copy

PLOTS_TEMPLATE = ROOT / "build" / "plots" / "template.html"

#: A screenshot counts as drawn when at least this share of its pixels is not white and its
#: grey levels vary at least this much (a blank page, of any one colour, has 0).
MIN_INK = 0.005
MIN_STDDEV = 5.0

#: What would load something from elsewhere: a script, stylesheet, image, frame, font...
EXTERNAL_LOAD = re.compile(
    r"""<(?:script|link|img|iframe|source|embed|object)\b[^>]*\b(?:src|href|data)\s*=\s*["']?"""
    r"""(?:https?:)?//""",
    re.IGNORECASE,
)


def _assert_drawn(png: Path, what: str) -> None:
    drawn = ink(png)
    assert drawn.non_white >= MIN_INK and drawn.stddev >= MIN_STDDEV, (
        f"{what}: the screenshot looks blank ({drawn}); see {png}"
    )


def _assert_offline(trap: TrapProxy, what: str) -> None:
    assert trap.page_requests == [], (
        f"{what} asked the network for {trap.page_requests} (all refused by the trap proxy)"
    )


def test_the_trap_sees_an_external_load(tmp_path):
    """The control: a page with an external image and script (http and https) is caught."""
    page = tmp_path / "control.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>control</p>"
        '<img src="http://example.invalid/x.png">'
        '<script src="https://example.invalid/y.js"></script>'
        "</body></html>",
        encoding="utf8",
    )
    with TrapProxy() as trap:
        render(page, proxy=trap, workdir=tmp_path / "chromium", screenshot=False, budget_ms=3000)
    seen = trap.page_requests
    assert "GET http://example.invalid/x.png" in seen, f"the trap missed the image: {trap.seen}"
    assert "CONNECT example.invalid:443" in seen, f"the trap missed the script: {trap.seen}"
    assert EXTERNAL_LOAD.search(page.read_text()), "the static check misses the control page"


def test_report_draws_offline(tmp_path):
    """The business report on the committed files (what a fresh clone has): drawn, and
    nothing loaded from anywhere."""
    from panelcast.report.html import write_report

    repo = tracked_copy(ROOT, tmp_path / "repo")
    params = load_params(repo / "params.yaml")
    started = time.monotonic()
    report = write_report(params, repo, out=tmp_path / "report" / "index.html")
    written = time.monotonic() - started
    html = report.read_text(encoding="utf8")
    assert not EXTERNAL_LOAD.search(html), EXTERNAL_LOAD.search(html).group(0)

    with TrapProxy() as trap:
        shot = render(report, proxy=trap, workdir=tmp_path / "chromium")
    _assert_offline(trap, "the report")
    _assert_drawn(shot.screenshot, "the report")
    print(f"report: written in {written:.1f} s, Chromium {shot.seconds:.1f} s")


def test_dvc_plots_diff_draws_offline(tmp_path):
    """`dvc plots diff` with the offline template in a clone: every Vega plot is drawn and
    nothing is loaded from a CDN (DVC's default page would load Vega from one)."""
    assert PLOTS_TEMPLATE.is_file(), (
        f"{PLOTS_TEMPLATE} is missing: `make plots-template` builds it (`make test` does)"
    )
    template = PLOTS_TEMPLATE.read_text(encoding="utf8")
    assert "{plot_divs}" in template and "{scripts}" not in template

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(ROOT), str(clone)], cwd=tmp_path)
    out = tmp_path / "plots"
    started = time.monotonic()
    run(
        ["dvc", "plots", "diff", "--html-template", str(PLOTS_TEMPLATE), "-o", str(out), "HEAD"],
        cwd=clone,
    )
    dvc_seconds = time.monotonic() - started
    page = out / "index.html"
    html = page.read_text(encoding="utf8")
    assert not EXTERNAL_LOAD.search(html), EXTERNAL_LOAD.search(html).group(0)
    plots = re.findall(r"vegaEmbed\('#([^']+)'", html)
    assert len(plots) >= 6, f"expected the plots of dvc.yaml in {page}, found {plots}"

    with TrapProxy() as trap:
        shot = render(page, proxy=trap, workdir=tmp_path / "chromium", dump_dom=True)
    _assert_offline(trap, "dvc plots diff's page")
    _assert_drawn(shot.screenshot, "dvc plots diff's page")
    # each plot's div became a Vega view with a canvas: the libraries ran, offline
    embedded = re.findall(
        r'<div id="([^"]+)" class="vega-embed[^"]*">\s*<div class="chart-wrapper"[^>]*>\s*'
        r'<canvas[^>]*class="marks"',
        shot.stdout,
    )
    missing = sorted(set(plots) - set(embedded))
    assert not missing, f"Vega drew no canvas for {missing} in {page}"
    print(f"plots diff: dvc {dvc_seconds:.1f} s, Chromium {shot.seconds:.1f} s, {len(plots)} plots")


def test_plots_template_is_self_contained():
    """The template built by `make plots-template` holds the three libraries itself."""
    assert PLOTS_TEMPLATE.is_file(), (
        f"{PLOTS_TEMPLATE} is missing: `make plots-template` builds it (`make test` does)"
    )
    template = PLOTS_TEMPLATE.read_text(encoding="utf8")
    assert not EXTERNAL_LOAD.search(template)
    for library in ("vega@5.", "vega-lite@5.", "vega-embed@6."):
        assert f"/* {library}" in template, f"{library} is not inlined in {PLOTS_TEMPLATE}"
