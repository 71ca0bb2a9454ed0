"""Data in: reading a source with its provenance (``sources``) and checking it against the
data contract (``contract``). May import ``core``."""
