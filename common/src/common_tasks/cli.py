"""The command line of the Celery worker services: `<script>` runs the worker, `<script> healthcheck`
probes a running one by the age of its heartbeat file, `<script> check-config` only validates the
environment (exit status 2 and one line per error when it is not valid), and `<script> celery ARGS`
is `celery -A <the service's app module> ARGS` (the images have no `celery` program of their own, and
no shell: `docker compose exec worker worker celery inspect ping`).

This module imports neither Celery nor the tasks, so a healthcheck (run every few seconds by Docker)
costs a fraction of a second instead of a full Celery import.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

from common_tasks.config import WorkerSettings, load_settings


def heartbeat_healthcheck(settings: WorkerSettings) -> int:
    """0 when the heartbeat file is fresh, 1 otherwise; prints one line either way."""
    limit = 3 * settings.WORKER_HEARTBEAT_INTERVAL + 5
    try:
        age = time.time() - os.stat(settings.WORKER_HEARTBEAT_FILE).st_mtime
    except FileNotFoundError:
        print(f"unhealthy: no heartbeat file at {settings.WORKER_HEARTBEAT_FILE}")
        return 1
    if age > limit:
        print(f"unhealthy: last heartbeat {age:.0f}s ago (limit {limit:.0f}s)")
        return 1
    print(f"healthy: last heartbeat {age:.1f}s ago")
    return 0


def worker_service_main(
    prog: str, settings_class: type[WorkerSettings], queue: str, app_module: str, argv: list[str] | None = None
) -> int:
    """Parse the environment, then probe (`healthcheck`) or run the worker of `app_module`'s `app`:
    the module `celery -A` takes, which builds the app from the environment when imported."""
    settings = load_settings(settings_class)
    arguments = sys.argv[1:] if argv is None else argv
    if arguments == ["healthcheck"]:
        return heartbeat_healthcheck(settings)
    if arguments == ["check-config"]:
        return 0
    if arguments[:1] == ["celery"]:
        from common_tasks.runner import run_celery

        return run_celery(importlib.import_module(app_module).app, arguments[1:])
    if arguments:
        print(f"usage: {prog} [healthcheck | check-config | celery ARGS]", file=sys.stderr)
        return 2
    from common_tasks.runner import run_worker

    app = importlib.import_module(app_module).app
    return run_worker(app, settings, queue, prog)
