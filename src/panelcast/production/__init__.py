"""Production: acting on the pipeline (retraining on demand as a DVC experiment).
May import ``core``."""
