"""The module `celery -A worker` finds (Celery's convention: `<package>.celery`): the worker's Celery
app, built from the environment when imported. The `worker` console script runs this same `app`."""

from __future__ import annotations

from common_tasks.config import load_settings
from worker.app import create_worker_app
from worker.settings import OrderWorkerSettings

app = create_worker_app(load_settings(OrderWorkerSettings))
