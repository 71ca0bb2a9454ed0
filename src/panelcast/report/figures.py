"""Static figures for the report (rendered with plotnine, which the project already ships)."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

from ..core.config import ProblemSpec


def adjective(unit: str) -> str:
    """``"monthly"``, ``"daily"``: the adjective of a calendar unit."""
    return {"day": "daily"}.get(unit, unit + "ly")


def backtest_figure(periods: pd.DataFrame, problem: ProblemSpec) -> bytes:
    """The figure of :func:`backtest_plot` as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    buf = io.BytesIO()
    fig = backtest_plot(periods, problem).draw()
    fig.set_size_inches(10, 4.5)
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def backtest_plot(periods: pd.DataFrame, problem: ProblemSpec) -> Any:
    """MAE per period and policy, retrain events marked (x: kept, o: promoted), every named
    period of ``problem.named_periods`` shaded and labelled with its name (a plotnine plot).

    ``periods`` holds the backtest's per-period rows (``period``, ``policy``, ``mae``,
    ``retrain``); the y axis names the target's unit (``problem.unit``), else its label.
    """
    from plotnine import (
        aes,
        annotate,
        geom_line,
        geom_point,
        ggplot,
        labs,
        scale_shape_manual,
        theme_bw,
    )

    cal = problem.calendar
    index = {p: cal.parse(p) for p in periods["period"].unique()}
    data = periods.assign(
        date=periods["period"].map({p: cal.start(t) for p, t in index.items()}),
        mae=pd.to_numeric(periods["mae"], errors="coerce"),
    )
    events = data[data["retrain"] != ""]
    plot = ggplot(data, aes("date", "mae", color="policy"))
    top = float(data["mae"].max()) if data["mae"].notna().any() else 1.0
    low, high = min(index.values(), default=0), max(index.values(), default=-1)
    for named in problem.named_periods:
        # shaded where it overlaps the replayed periods, from its first instant to the next's
        start, end = max(cal.parse(named.start), low), min(cal.parse(named.end), high)
        if start > end:
            continue
        first, after = cal.start(start), cal.start(end + 1)
        plot += annotate("rect", xmin=first, xmax=after, ymin=0, ymax=top, fill="grey", alpha=0.15)
        plot += annotate(
            "text", x=first + (after - first) / 2, y=top, label=named.name, va="bottom", size=9
        )
    plot = (
        plot
        + geom_line()
        + geom_point(events, aes("date", "mae", color="policy", shape="retrain"), size=2.5)
        + scale_shape_manual(values={"promoted": "o", "kept": "x"})
        + labs(
            x=f"forecast {cal.unit}",
            y=f"MAE ({problem.unit or problem.label})",
            shape="retrain",
            title=f"Backtest: {adjective(cal.unit)} error on {problem.label} per retraining policy",
        )
        + theme_bw()
    )
    return plot
