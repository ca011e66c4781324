"""Running a Celery worker service: the worker's arguments and its heartbeat file.

The heartbeat file is touched from the consumer's event loop; `common_tasks.cli` probes its age,
which is cheaper than `celery inspect ping` (no process on the broker, no reply keys left behind).
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery, bootsteps

from common_tasks.config import WorkerSettings


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


def run_worker(app: Celery, settings: WorkerSettings, queue: str, node_prefix: str) -> None:
    install_heartbeat(app, settings.WORKER_HEARTBEAT_FILE, settings.WORKER_HEARTBEAT_INTERVAL)
    app.worker_main(worker_argv(settings, queue, node_prefix))
