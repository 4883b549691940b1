"""Per-run labels (pandas only) and in-training progress measures."""
