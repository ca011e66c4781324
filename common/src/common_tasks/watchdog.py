"""The stall watchdog: a worker that is alive but no longer works ends, so that it is restarted."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import redis
from celery import Celery, bootsteps, signals

from common_tasks.config import WorkerSettings
from common_tasks.redis_state import redis_client

logger = logging.getLogger("common_tasks.watchdog")


class StallWatchdog:
    """A stuck worker is a dead worker: a thread of the main process that ends it (exit status 1,
    one CRITICAL line) when, with the broker answering all along,
    - the heartbeat file has not moved (or has been missing: the consumer is not running) for
      `limit` seconds: a consumer that never came back (Celery waits up to 30 s between two
      reconnection attempts, which the default, 60 s, allows for);
    - or no message has been taken for `longest_task` + `limit` seconds while the worker's queue
      holds some: a consumer that runs but no longer consumes (celery#8030, #8082; or every pool
      process held by a task whose time limit Celery dropped on a reconnect: Celery 5.6.3 clears
      its event loop's timers on a connection error);
    - or a stop has not ended after `longest_task` + `limit` seconds (a stop after an unrecoverable
      error that hangs).
    A worker waiting for a broker that is away keeps running. Whatever supervises the process
    (compose's `restart`, Kubernetes) starts it again."""

    def __init__(
        self, heartbeat_file: Path, queue: str, limit: float, longest_task: float, broker: redis.Redis
    ) -> None:
        self.heartbeat_file = heartbeat_file
        self.queue = queue
        self.limit = limit
        self.idle_limit = longest_task + limit
        self.broker = broker
        self.stopping_since: float | None = None
        self.last_received = time.time()
        self._answering_since: float | None = None
        self._missing_since: float | None = None

    def stopping(self, **_: object) -> None:
        self.stopping_since = self.stopping_since or time.time()

    def received(self, **_: object) -> None:
        self.last_received = time.time()

    def _waiting(self) -> int:
        """Messages waiting in the worker's queue (a Redis list named after it: Celery's docs,
        Monitoring, "Inspecting queues")."""
        try:
            return int(self.broker.llen(self.queue))
        except (redis.RedisError, OSError, ValueError):
            return 0

    def _broker_answers(self) -> bool:
        try:
            return bool(self.broker.ping())
        except (redis.RedisError, OSError, ValueError):
            return False

    def _last_beat(self, now: float) -> float:
        try:
            beat = self.heartbeat_file.stat().st_mtime
        except FileNotFoundError:
            self._missing_since = self._missing_since or now
            return self._missing_since
        self._missing_since = None
        return beat

    def verdict(self) -> str | None:
        """Why the worker must end now, or None."""
        now = time.time()
        if self.stopping_since is not None:
            if now - self.stopping_since > self.idle_limit:
                return f"a stop still not ended after {now - self.stopping_since:.0f}s"
            return None
        last_beat = self._last_beat(now)
        if not self._broker_answers():
            self._answering_since = None
            return None
        self._answering_since = self._answering_since or now
        stalled = now - max(last_beat, self._answering_since)
        if stalled > self.limit:
            return f"no progress for {stalled:.0f}s while the broker answers"
        idle = now - max(self.last_received, self._answering_since)
        if idle > self.idle_limit and (waiting := self._waiting()):
            return f"no message taken for {idle:.0f}s while {waiting} wait in {self.queue}"
        return None

    def watch(self) -> None:
        while True:
            time.sleep(min(5.0, self.limit / 4))
            reason = self.verdict()
            if reason:
                logger.critical("%s: exiting to be restarted", reason)
                logging.shutdown()
                os._exit(1)


def install_stall_watchdog(app: Celery, settings: WorkerSettings, queue: str, longest_task: float) -> None:
    watchdog = StallWatchdog(
        Path(settings.WORKER_HEARTBEAT_FILE),
        queue,
        settings.WORKER_STALL_SECONDS,
        longest_task,
        redis_client(settings.CELERY_BROKER_URL, settings.REDIS_SENTINEL_MASTER),
    )
    # A warm stop (SIGTERM) removes the heartbeat file and waits for running tasks: from then on
    # only the stop's own bound applies.
    signals.worker_shutting_down.connect(watchdog.stopping, weak=False)
    signals.task_received.connect(watchdog.received, weak=False)

    class StallWatchdogStep(bootsteps.StartStopStep):
        def start(self, worker: object) -> None:
            threading.Thread(target=watchdog.watch, name="stall-watchdog", daemon=True).start()

        def stop(self, worker: object) -> None:
            watchdog.stopping()

        terminate = stop

    app.steps["worker"].add(StallWatchdogStep)
