"""Monitoring: drift statistics (``drift``), what is monitored and its reference
(``reference``), and the replay of retraining policies on history (``backtest``).
May import ``core`` and ``modelling``."""
