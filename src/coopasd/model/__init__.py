"""The BEATs audio transformer, its heads, and self-describing checkpoints."""
