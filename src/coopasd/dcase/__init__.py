"""DCASE 2023 Task 2: metrics, submission files, scored results of a run."""
