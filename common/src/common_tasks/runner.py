"""Running a Celery worker service: its bootsteps (heartbeat file; the stall watchdog is
common_tasks.watchdog's), its logging, and the worker's arguments.

The heartbeat file is touched from the consumer's event loop; `common_tasks.cli` probes its age,
which is cheaper than `celery inspect ping` (no process on the broker, no reply keys left behind).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from celery import Celery, bootsteps, signals

from common_tasks.celery_logs import summary
from common_tasks.config import WorkerSettings
from common_tasks.logs import configure_logging
from common_tasks.watchdog import install_stall_watchdog

logger = logging.getLogger("common_tasks.runner")


def install_heartbeat(app: Celery, path: str, interval: float) -> None:
    heartbeat_file = Path(path)

    class HeartbeatFile(bootsteps.StartStopStep):
        """Touches the heartbeat file while the consumer runs (started once it consumes, so the
        file is missing while it reconnects); removes it on shutdown."""

        requires = ("celery.worker.consumer.tasks:Tasks",)

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


def install_worker_steps(app: Celery, settings: WorkerSettings, queue: str, longest_task: float) -> None:
    """What every worker of this app runs besides Celery's own steps, whether started by the
    service's console script or by `celery -A <module> worker`: `queue` is the one it consumes,
    `longest_task` the longest any of its tasks may run (seconds)."""
    install_heartbeat(app, settings.WORKER_HEARTBEAT_FILE, settings.WORKER_HEARTBEAT_INTERVAL)
    install_stall_watchdog(app, settings, queue, longest_task)


def node_name(prefix: str) -> str:
    """`worker@<host>` in a container (PID 1; the host name is the container's own), else
    `worker.<pid>@<host>`, so processes on one host can be told apart too."""
    pid = os.getpid()
    return f"{prefix}@%h" if pid == 1 else f"{prefix}.{pid}@%h"


def worker_argv(settings: WorkerSettings, queue: str, node_prefix: str) -> list[str]:
    # --quiet: no start-up banner, which is not a log record (it would break one JSON object per line).
    quiet = ["--quiet"] if settings.LOG_FORMAT == "json" else []
    return [
        *quiet,
        "worker",
        "--queues",
        queue,
        "--concurrency",
        str(settings.WORKER_CONCURRENCY),
        "--loglevel",
        settings.LOG_LEVEL,
        "--hostname",
        node_name(node_prefix),
        # Mingle and gossip add broker chatter at start-up; the services never use them.
        "--without-mingle",
        "--without-gossip",
    ]


def keep_service_logging(**_: object) -> None:
    """Celery's setup_logging signal: logging is configured already (common_tasks.logs)."""


def run_worker(app: Celery, settings: WorkerSettings, queue: str, node_prefix: str) -> int:
    """Run the worker until it stops; returns its exit status.

    Not `app.worker_main()`: that drops the worker's exit status, so a worker that stopped on an
    unrecoverable error would exit 0 and a supervisor that restarts on failure only would not see it.
    """
    # Configured before Celery runs (its start-up warnings are records too); a receiver of
    # setup_logging keeps Celery from configuring logging itself (docs: signals.setup_logging).
    configure_logging(node_prefix, settings.LOG_LEVEL, settings.LOG_FORMAT, settings.LOG_TASK_LINES)
    signals.setup_logging.connect(keep_service_logging, weak=False)
    stop_requested: list[str] = []
    signals.worker_shutting_down.connect(lambda how="", **_: stop_requested.append(how), weak=False)
    try:
        status = run_celery(app, worker_argv(settings, queue, node_prefix))
    except Exception as error:
        if "Warm" not in stop_requested:
            raise
        status, failure = 1, summary(error)
    else:
        failure = f"Celery's exit status {status}"
    if status and "Warm" in stop_requested:
        # A warm stop while the broker connection is down: kombu cannot hand the lost channel's
        # messages back and raises on the way out ('NoneType' object has no attribute 'hostname',
        # kombu#970, #582). The process still stopped as asked; Redis redelivers those messages after
        # the visibility timeout and the orders' leases bring their steps back sooner.
        logger.warning("warm stop with the broker unreachable (%s): stopped as asked", failure)
        return 0
    return status


def run_celery(app: Celery, arguments: list[str]) -> int:
    """`celery -A <app> ARGUMENTS`, returning its exit status."""
    import click
    from celery.bin.celery import celery as celery_command

    celery_command.params[0].default = app  # what app.start() does: the `--app` option's default
    try:
        status = celery_command.main(args=arguments, prog_name="celery", standalone_mode=False)
    except click.exceptions.Exit as done:  # --help, --version
        return done.exit_code
    except click.ClickException as error:  # bad arguments: click's own message and status
        error.show()
        return error.exit_code
    return status if isinstance(status, int) else 0
