"""Benchmark of the celery-stack services against bare Celery / bare Flask baselines (see bench/README.md)."""
