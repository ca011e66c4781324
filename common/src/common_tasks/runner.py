"""Start-up of the Celery worker services (worker and notification-service).

Both console scripts take no arguments to run, or `healthcheck` to probe a running worker: the probe
checks the age of a heartbeat file that the worker's consumer touches from its event loop, which is
cheaper than `celery inspect ping` (no process on the broker, no reply keys left behind).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from celery import Celery, bootsteps

from common_tasks.config import WorkerSettings

USAGE = "usage: {prog} [healthcheck]"


def install_heartbeat(app: Celery, path: str, interval: float) -> None:
    heartbeat_file = Path(path)

    class HeartbeatFile(bootsteps.StartStopStep):
        """Touches the heartbeat file while the consumer runs; removes it on shutdown."""

        def __init__(self, parent: object, **kwargs: object) -> None:
            super().__init__(parent, **kwargs)
            self.timer_ref: object | None = None

        def start(self, consumer: object) -> None:
            self.beat()
            self.timer_ref = consumer.timer.call_repeatedly(interval, self.beat)  # type: ignore[attr-defined]

        def stop(self, consumer: object) -> None:
            if self.timer_ref is not None:
                self.timer_ref.cancel()  # type: ignore[attr-defined]
                self.timer_ref = None
            heartbeat_file.unlink(missing_ok=True)

        def beat(self) -> None:
            heartbeat_file.parent.mkdir(parents=True, exist_ok=True)
            heartbeat_file.touch()

    app.steps["consumer"].add(HeartbeatFile)


def healthcheck(settings: WorkerSettings) -> int:
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


def worker_argv(settings: WorkerSettings, queue: str, node_prefix: str) -> list[str]:
    return [
        "worker",
        "--queues",
        queue,
        "--concurrency",
        str(settings.WORKER_CONCURRENCY),
        "--loglevel",
        settings.LOG_LEVEL,
        # A unique node name per process, so replicas on one host can be told apart.
        "--hostname",
        f"{node_prefix}.{os.getpid()}@%h",
        # Mingle and gossip add broker chatter at start-up; the services never use them.
        "--without-mingle",
        "--without-gossip",
    ]


def run_worker_service(
    create_app: Callable[[], Celery], settings: WorkerSettings, queue: str, prog: str, argv: list[str]
) -> int:
    """Entry point shared by the worker console scripts; the app is built only to run the worker."""
    if argv == ["healthcheck"]:
        return healthcheck(settings)
    if argv:
        print(USAGE.format(prog=prog), file=sys.stderr)
        return 2
    app = create_app()
    install_heartbeat(app, settings.WORKER_HEARTBEAT_FILE, settings.WORKER_HEARTBEAT_INTERVAL)
    app.worker_main(worker_argv(settings, queue, prog))
    return 0
