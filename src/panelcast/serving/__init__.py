"""Serving: the deployed model answering forecasts in batch files and over HTTP, with the
same contract and the same feature code as the pipeline. May import ``core``, ``data``,
``modelling`` and ``pipeline`` (and, for HTTP, FastAPI and uvicorn).

- ``forecaster``: the deployed bundle loaded and checked; the reference forecasting path
  (``next_period_features``), used by ``panelcast predict``;
- ``fastpath`` and ``compiled``: the same forecasts from per-segment arrays and a numpy
  evaluation of the fitted trees, bit for bit (tested against the reference);
- ``protocol``: request formats (``/predict``, Open Inference Protocol v2) and client errors;
- ``loading``, ``app``, ``metrics``, ``server``: the HTTP service (``panelcast serve``).
"""
