"""Runnable benchmarks: each prints auditcore beside its baselines, measured in the same run."""
