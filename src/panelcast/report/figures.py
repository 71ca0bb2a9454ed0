"""Static figures for the report (rendered with plotnine, which the project already ships).

Every figure names its axes with the target's unit (``problem.unit``, else its label),
shades the named periods of ``problem.named_periods`` it covers, and says what its legend
means in plain words. :func:`svg_markup` renders one as SVG text for inlining into HTML:
text drawn as paths (no font files), a fixed hash salt and no date, so the same figure
gives the same bytes.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import ProblemSpec

#: The legend of a retrain event, in plain words (the backtest's ``retrain`` values).
RETRAIN_LABELS = {
    "promoted": "retrained: new model deployed",
    "kept": "retrained: old model kept (the new one was not better)",
}
#: Matplotlib settings that make an SVG the same bytes for the same figure.
SVG_RC = {"svg.hashsalt": "panelcast-report", "svg.fonttype": "path"}
#: Colours of the report's forecasters (the model first).
MODEL_COLOUR, RULE_COLOUR, REFERENCE_COLOUR = "#1f5fa8", "#d9822b", "#8c8c8c"


def adjective(unit: str) -> str:
    """``"monthly"``, ``"daily"``: the adjective of a calendar unit."""
    return {"day": "daily"}.get(unit, unit + "ly")


def value_axis(problem: ProblemSpec, what: str = "MAE") -> str:
    """``"MAE (homes)"``: an axis title in the target's unit, else its label."""
    return f"{what} ({problem.unit or problem.label})"


#: How the x axis shows dates, per frequency.
DATE_LABELS = {
    "H": "%m-%d %H:00",
    "D": "%Y-%m-%d",
    "W": "%Y-%m-%d",
    "M": "%Y-%m",
    "Q": "%Y",
    "Y": "%Y",
}


def date_scale(problem: ProblemSpec) -> list[Any]:
    """An x scale of dates in the form of the calendar (``2015-08`` for monthly data); the
    labels are slanted for hours, days and weeks, whose text is long."""
    from plotnine import element_text, scale_x_datetime, theme

    frequency = problem.calendar.frequency
    parts = [scale_x_datetime(date_labels=DATE_LABELS[frequency])]
    if frequency in ("H", "D", "W"):
        parts.append(theme(axis_text_x=element_text(rotation=30, ha="right")))
    return parts


def thousands(values: Any) -> list[str]:
    """Axis labels with thousands separators (``12,000``; decimals only when needed)."""
    values = [float(v) for v in values]
    digits = next(
        (
            d
            for d in range(7)
            if all(abs(round(v, d) - v) <= 1e-9 * max(1.0, abs(v)) for v in values)
        ),
        6,
    )
    return [f"{v:,.{digits}f}" for v in values]


def _agg() -> None:
    import matplotlib

    matplotlib.use("Agg")


def backtest_figure(periods: pd.DataFrame, problem: ProblemSpec) -> bytes:
    """The figure of :func:`backtest_plot` as PNG bytes."""
    import matplotlib.pyplot as plt

    _agg()
    buf = io.BytesIO()
    fig = backtest_plot(periods, problem).draw()
    fig.set_size_inches(10, 4.5)
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def shade_named_periods(
    plot: Any, problem: ProblemSpec, low: int, high: int, top: float | None = None
) -> Any:
    """``plot`` with every named period that overlaps periods ``low .. high`` shaded from its
    first instant to the next period's, and labelled with its name (at ``top``, else at the
    top of each panel)."""
    from plotnine import annotate

    cal = problem.calendar
    for named in problem.named_periods:
        start, end = max(cal.parse(named.start), low), min(cal.parse(named.end), high)
        if start > end:
            continue
        first, after = cal.start(start), cal.start(end + 1)
        bottom, ceiling = (0, top) if top is not None else (-np.inf, np.inf)
        plot += annotate(
            "rect", xmin=first, xmax=after, ymin=bottom, ymax=ceiling, fill="grey", alpha=0.15
        )
        plot += annotate(
            "text",
            x=first + (after - first) / 2,
            y=top if top is not None else np.inf,
            label=named.name.replace("_", " "),
            va="bottom" if top is not None else "top",
            size=9,
        )
    return plot


def backtest_plot(periods: pd.DataFrame, problem: ProblemSpec) -> Any:
    """MAE per period and policy, retrain events marked (o: a new model was deployed, x: the
    old one was kept), every named period of ``problem.named_periods`` shaded and labelled
    with its name (a plotnine plot).

    ``periods`` holds the backtest's per-period rows (``period``, ``policy``, ``mae``,
    ``retrain``: ``""``, ``"kept"`` or ``"promoted"``); the y axis names the target's unit
    (``problem.unit``), else its label.
    """
    from plotnine import (
        aes,
        geom_line,
        geom_point,
        ggplot,
        labs,
        scale_shape_manual,
        theme,
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
    plot = shade_named_periods(plot, problem, low, high, top)
    plot = (
        plot
        + geom_line()
        + geom_point(events, aes("date", "mae", color="policy", shape="retrain"), size=2.5)
        + scale_shape_manual(values={"promoted": "o", "kept": "x"}, labels=RETRAIN_LABELS)
        + labs(
            x=f"forecast {cal.unit}",
            y=value_axis(problem),
            color="retraining policy",
            shape="retrain event",
            title=f"Backtest: {adjective(cal.unit)} error on {problem.label} per retraining policy",
        )
        + theme_bw()
        + date_scale(problem)
        + theme(legend_position="bottom", legend_box="vertical")
    )
    return plot


# --------------------------------------------------------------------------- SVG


_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(xlink:href="#|href="#|url\(#)([^")]+)')
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)


def svg_markup(plot: Any, width: float = 9.0, height: float = 4.5, prefix: str = "fig") -> str:
    """``plot`` as inline SVG text (no XML header), ``width`` x ``height`` inches.

    Text is drawn as paths, hashes use a fixed salt and no date is written, so the same
    plot gives the same text. Every element id is prefixed with ``prefix`` so that several
    figures can share one HTML page.
    """
    import matplotlib
    import matplotlib.pyplot as plt
    from plotnine import theme

    _agg()
    with matplotlib.rc_context(SVG_RC):
        fig = (plot + theme(figure_size=(width, height))).draw()
        buf = io.BytesIO()
        try:
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
        finally:
            plt.close(fig)
    text = buf.getvalue().decode("utf-8")
    text = _METADATA.sub("", text[text.index("<svg") :])
    text = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', text)
    text = _REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", text)
    return re.sub(r"\n[ \t]+", "\n", text).strip() + "\n"


# --------------------------------------------------------------------------- figures


def comparison_plot(table: pd.DataFrame, problem: ProblemSpec) -> Any:
    """Horizontal bars of MAE per forecaster (``name``, ``kind``, ``mae``), lowest at the top,
    coloured by kind (``"the model"``, ``"simple rule"``, ``"statistical reference"``)."""
    from plotnine import (
        aes,
        coord_flip,
        geom_col,
        geom_text,
        ggplot,
        labs,
        scale_fill_manual,
        scale_y_continuous,
        theme,
        theme_bw,
    )

    data = table.dropna(subset=["mae"]).sort_values("mae", ascending=False, kind="stable")
    data = data.assign(
        name=pd.Categorical(data["name"], categories=list(dict.fromkeys(data["name"]))),
        text=[f"{v:,.1f}" for v in data["mae"]],
    )
    top = float(data["mae"].max()) if len(data) else 1.0
    return (
        ggplot(data, aes("name", "mae", fill="kind"))
        + geom_col(width=0.7)
        + geom_text(aes(label="text"), ha="left", nudge_y=top * 0.01, size=9)
        + coord_flip()
        + scale_y_continuous(limits=(0, top * 1.12))
        + scale_fill_manual(
            values={
                "the model": MODEL_COLOUR,
                "simple rule": RULE_COLOUR,
                "statistical reference": REFERENCE_COLOUR,
            }
        )
        + labs(
            x="",
            y=value_axis(problem, "average error per forecast, MAE"),
            fill="forecaster",
            title=f"Error on {problem.label} in the test window (lower is better)",
        )
        + theme_bw()
        + theme(legend_position="bottom")
    )


def segment_error_plot(frame: pd.DataFrame, problem: ProblemSpec, noun: str) -> Any:
    """Model MAE against the best rule's MAE per segment (``segment``, ``model_mae``,
    ``rule_mae``), one row per segment, a log scale; segments where the rule wins say so."""
    from plotnine import (
        aes,
        geom_point,
        geom_segment,
        geom_text,
        ggplot,
        labs,
        scale_color_manual,
        scale_x_log10,
        theme,
        theme_bw,
    )

    data = frame.sort_values("rule_mae", kind="stable").reset_index(drop=True)
    order = list(dict.fromkeys(data["segment"].astype(str)))
    data = data.assign(segment=pd.Categorical(data["segment"].astype(str), categories=order))
    long = pd.concat(
        [
            data.assign(forecaster="the model", mae=data["model_mae"]),
            data.assign(forecaster="best simple rule", mae=data["rule_mae"]),
        ],
        ignore_index=True,
    )
    losing = data[data["model_mae"] > data["rule_mae"]].assign(
        x=lambda d: d[["model_mae", "rule_mae"]].max(axis=1) * 1.08, label="rule better"
    )
    plot = (
        ggplot(data)
        + geom_segment(
            aes(x="rule_mae", xend="model_mae", y="segment", yend="segment"), color="grey"
        )
        + geom_point(long, aes("mae", "segment", color="forecaster"), size=2.2)
        + scale_color_manual(values={"the model": MODEL_COLOUR, "best simple rule": RULE_COLOUR})
        + scale_x_log10()
        + labs(
            x=value_axis(problem, "MAE, log scale"),
            y="",
            color="",
            title=f"Error per {noun} in the test window (left is better)",
        )
        + theme_bw()
        + theme(legend_position="bottom")
    )
    if len(losing):
        plot += geom_text(
            losing, aes("x", "segment", label="label"), ha="left", size=8, color="#b00020"
        )
    return plot


def forecast_plot(
    history: pd.DataFrame, forecasts: pd.DataFrame, problem: ProblemSpec, levels: list[int]
) -> Any:
    """Recent history (``segment``, ``period``, ``value``) and the forecasts (``segment``,
    ``period``, ``forecast`` and ``lower_<level>`` / ``upper_<level>``) with their
    intervals as shaded boxes, one panel per segment."""
    from plotnine import (
        aes,
        facet_wrap,
        geom_line,
        geom_point,
        geom_rect,
        ggplot,
        labs,
        scale_color_manual,
        scale_fill_manual,
        scale_y_continuous,
        theme,
        theme_bw,
    )

    cal = problem.calendar
    hist_t = history["period"].map(cal.parse)
    fc_t = forecasts["period"].map(cal.parse)
    hist = history.assign(date=hist_t.map(cal.start), what="observed")
    fc = forecasts.assign(
        date=fc_t.map(cal.start),
        left=(fc_t.astype(float) - 0.4).map(_instant(cal)),
        right=(fc_t.astype(float) + 0.4).map(_instant(cal)),
        what="forecast",
    )
    bands = []
    shades = {}
    for i, level in enumerate(sorted(levels, reverse=True)):
        name = f"{level} % interval"
        shades[name] = ["#c6d9ef", "#8db3dd", "#5a8fcb"][min(i, 2)]
        bands.append(
            fc.assign(band=name, ymin=fc[f"lower_{level}"], ymax=fc[f"upper_{level}"])[
                ["segment", "left", "right", "ymin", "ymax", "band"]
            ]
        )
    plot = ggplot(hist, aes("date", "value"))
    low = int(min(hist_t.min(), fc_t.min())) if len(hist) else int(fc_t.min())
    high = int(max(hist_t.max() if len(hist) else fc_t.max(), fc_t.max()))
    plot = shade_named_periods(plot, problem, low, high)
    if bands:
        band_frame = pd.concat(bands, ignore_index=True)
        band_frame["band"] = pd.Categorical(band_frame["band"], categories=list(shades))
        plot += geom_rect(
            band_frame,
            aes(xmin="left", xmax="right", ymin="ymin", ymax="ymax", fill="band"),
            inherit_aes=False,
        )
    if len(hist):
        # the last observation joined to the forecasts: a dashed line across the gap
        last = hist.sort_values("date").groupby("segment", sort=False, observed=True).tail(1)
        ahead = fc[["segment", "date"]].assign(value=fc["forecast"])
        bridge = pd.concat([last[["segment", "date", "value"]], ahead], ignore_index=True)
        bridge = bridge.sort_values(["segment", "date"], kind="stable")
        plot += geom_line(
            bridge, aes("date", "value", group="segment"), linetype="dashed", color="grey"
        )
        plot += geom_line(aes(color="what"))
    plot = (
        plot
        + geom_point(fc, aes("date", "forecast", color="what"), size=2.5)
        + scale_color_manual(
            values={"observed": "black", "forecast": MODEL_COLOUR},
            breaks=["observed", "forecast"],
        )
        + scale_fill_manual(values=shades)
        + scale_y_continuous(labels=thousands)
        + labs(
            x=cal.unit,
            y=f"{problem.label} ({problem.unit})" if problem.unit else problem.label,
            color="",
            fill="",
            title=f"{problem.label}: recent history and the forecast",
        )
        + theme_bw()
        + date_scale(problem)
        + theme(legend_position="bottom")
    )
    if history["segment"].nunique() > 1 or forecasts["segment"].nunique() > 1:
        plot += facet_wrap("segment", ncol=2, scales="free_y")
    return plot


def _instant(cal: Any) -> Any:
    """A fractional period index -> the instant that far into the period."""

    def at(x: float) -> pd.Timestamp:
        whole = int(np.floor(x))
        start, after = cal.start(whole), cal.start(whole + 1)
        return start + (after - start) * (x - whole)

    return at


def live_error_plot(frame: pd.DataFrame, problem: ProblemSpec) -> Any:
    """Live MAE per period (``period``, ``forecaster``, ``mae``) of the model and the rule."""
    from plotnine import (
        aes,
        geom_line,
        geom_point,
        ggplot,
        labs,
        scale_color_manual,
        scale_y_continuous,
        theme,
        theme_bw,
    )

    cal = problem.calendar
    t = frame["period"].map(cal.parse)
    data = frame.assign(date=t.map(cal.start))
    plot = ggplot(data, aes("date", "mae", color="forecaster"))
    if len(data):
        top = float(data["mae"].max()) if data["mae"].notna().any() else 1.0
        plot = shade_named_periods(plot, problem, int(t.min()), int(t.max()), top)
    return (
        plot
        + geom_line()
        + geom_point(size=1.8)
        + scale_color_manual(values={"the model": MODEL_COLOUR, "simple rule": RULE_COLOUR})
        + scale_y_continuous(labels=thousands)
        + labs(
            x=cal.unit,
            y=value_axis(problem),
            color="",
            title=f"Production: live {adjective(cal.unit)} error on {problem.label}",
        )
        + theme_bw()
        + date_scale(problem)
        + theme(legend_position="bottom")
    )
