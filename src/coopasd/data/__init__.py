"""Data layer: DCASE 2023 Task 2 layout, audio loading, synthetic factories, partitions."""
