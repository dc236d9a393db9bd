"""Anomaly detectors: kNN memory banks, fused members, member weights, the saved factory model."""
