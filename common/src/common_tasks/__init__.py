"""The wire and the runtime every celery-stack service shares: task contracts and payload schemas,
settings from the environment, the Celery app, its log filters and the worker command line."""

__version__ = "0.1.0"
