"""Benchmarks for celery_supervise: ``python benchmarks/run.py`` (or ``make bench``)."""
