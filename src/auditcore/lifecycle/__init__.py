"""Data lifecycle: retention policies, archives of pruned events, and restoring them."""
