"""Static figures for the report (rendered with plotnine, which the project already ships)."""

from __future__ import annotations

import io

import pandas as pd


def backtest_figure(months: pd.DataFrame) -> bytes:
    """Monthly MAE per policy, retrain events marked (x: kept, o: promoted); PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from plotnine import aes, geom_line, geom_point, ggplot, labs, scale_shape_manual, theme_bw

    data = months.assign(date=pd.to_datetime(months["month"] + "-01"))
    events = data[data["retrain"] != ""]
    plot = (
        ggplot(data, aes("date", "mae", color="policy"))
        + geom_line()
        + geom_point(events, aes("date", "mae", color="policy", shape="retrain"), size=2.5)
        + scale_shape_manual(values={"promoted": "o", "kept": "x"})
        + labs(
            x="forecast month",
            y="MAE (homes sold)",
            shape="retrain",
            title="Backtest: monthly error per retraining policy",
        )
        + theme_bw()
    )
    buf = io.BytesIO()
    fig = plot.draw()
    fig.set_size_inches(10, 4.5)
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()
