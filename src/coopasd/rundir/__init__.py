"""The on-disk writer: run directories, models, metrics and records (no rich, no matplotlib: Flower imports it)."""
