"""Modelling: past-only features (``features``), rule-based benchmarks (``rules``), the
estimator, its time-ordered search and safe persistence (``model``), metrics and the
evaluation gate (``metrics``, ``evaluation``). May import ``core``."""
