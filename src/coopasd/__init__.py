"""coopasd: cooperative (federated) machine anomalous sound detection."""

__version__ = "0.1.0"
