"""Figures and reports for people. May import ``core``."""
