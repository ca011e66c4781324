"""Shared Celery app, task contracts and order store of the celery-stack services."""

__version__ = "0.1.0"
