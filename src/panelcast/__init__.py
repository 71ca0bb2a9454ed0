"""panelcast: a forecasting pipeline from a business question to a monitored model.

Subpackages follow the lifecycle; each may import only the ones listed before it:

- ``core``: configuration, errors, the column and period vocabulary, I/O, the stage runner.
- ``data``: sources (collect with provenance) and the data contract.
- ``modelling``: features, rules, the model and its search, metrics and evaluation.
- ``monitoring``: drift statistics, the drift reference, and the retraining backtest.
- ``report``: figures for people.
- ``pipeline``: one module per DVC stage, composing the above into typed functions that
  take and return data (the stage scripts in ``stages/`` only read, call and write).
- ``serving``: the deployed model answering in batch files and over HTTP (FastAPI).
- ``production``: acting on the pipeline in production (retraining on demand).

``panelcast.cli`` is the ``panelcast`` console script (``predict``, ``serve``).

Package ``__init__`` modules hold only a docstring, so that importing one module costs
(and, for DVC, depends on) only what that module imports.
"""
