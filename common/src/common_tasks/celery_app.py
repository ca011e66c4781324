"""The Celery app every service uses, configured from CommonSettings only.

Setting names are Celery's documented ones (docs: Configuration and defaults).
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery
from kombu import Queue

from common_tasks.config import CommonSettings, ConfigError
from common_tasks.redis_state import sentinel_kwargs
from common_tasks.tasks import ORDERS_QUEUE, QUEUES, task_routes

# Publishing gives up after ~0.6 s so the HTTP API can answer 503 quickly when Redis is down.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.3}
SOCKET_CONNECT_TIMEOUT = 1.0
# Bounds synchronous Redis commands on a dead connection; the consumer's BRPOP waits only ~1 s.
SOCKET_TIMEOUT = 10.0
RESULT_EXPIRES = 3600
ETA_TASK_LIMIT = 100
# The Celery releases this code is tested with (requirements.lock, nix/nixpkgs-versions.toml).
SUPPORTED_CELERY = ((5, 6, 3), (5, 7, 0))


def check_celery_version(version: tuple[int, ...] | None = None) -> None:
    """Stop with one line when the installed Celery is outside SUPPORTED_CELERY: recovery rests on
    how acks-late, the visibility timeout and connection loss behave, which has changed within a
    minor series before (5.6.2 -> 5.6.3)."""
    import celery

    installed = version or tuple(celery.VERSION[:3])
    lowest, below = SUPPORTED_CELERY
    if not lowest <= installed < below:
        shown = ".".join(map(str, installed))
        print(
            f"configuration error: celery {shown} is installed; this release supports "
            f"celery >={'.'.join(map(str, lowest))},<{'.'.join(map(str, below))}",
            file=sys.stderr,
        )
        raise ConfigError(2)


def sentinel_options(settings: CommonSettings) -> dict[str, Any]:
    """For sentinel:// URLs: the master's name, and timeouts on the Sentinel connections too (Celery's
    result backend would give them none)."""
    if not settings.REDIS_SENTINEL_MASTER:
        return {}
    return {"master_name": settings.REDIS_SENTINEL_MASTER, "sentinel_kwargs": sentinel_kwargs()}


def redis_transport_options(settings: CommonSettings) -> dict[str, Any]:
    visibility = settings.CELERY_VISIBILITY_TIMEOUT
    return {
        "visibility_timeout": visibility,
        "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_keepalive": True,
        "retry_on_timeout": True,
        # Stop producers retrying a dead connection forever.
        "max_retries": 2,
        **sentinel_options(settings),
    }


def task_time_limit(visibility_timeout: int) -> float:
    """The hard time limit of every task: its pool process is killed then. Redis counts the
    visibility timeout from delivery, so a message must be acknowledged before it passes (or a second
    copy starts while the first still runs): the longest run plus the longest retry countdown
    (`longest_countdown`) stays within 90 % of it. There is no soft limit: an exception raised
    wherever the task happens to be (even while it writes its result to the pool's pipe) can leave
    the pool's pipe torn; each outside call has its own timeout instead."""
    return 0.45 * visibility_timeout


def longest_countdown(visibility_timeout: int) -> float:
    """The longest a retry waits in a worker's timer (a retry's countdown runs from the new
    message's delivery): 60 s, or less with a short visibility timeout (see task_time_limit)."""
    return min(60.0, 0.45 * visibility_timeout)


def celery_config(settings: CommonSettings) -> dict[str, Any]:
    transport_options = redis_transport_options(settings)
    return {
        "broker_url": settings.CELERY_BROKER_URL,
        "result_backend": settings.CELERY_RESULT_BACKEND,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": {
            "visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT,
            **sentinel_options(settings),
        },
        "broker_connection_retry_on_startup": True,
        # A worker reconnects for as long as the broker is away (Celery's default gives up after 100
        # tries, ~50 minutes, and the process exits).
        "broker_connection_max_retries": None,
        "broker_connection_timeout": SOCKET_CONNECT_TIMEOUT,
        "redis_socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
        "redis_socket_timeout": SOCKET_TIMEOUT,
        # JSON only on the wire: a pickle message is refused before it is deserialized.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # No task outlives the visibility timeout (an order cut off is re-sent when its lease ends).
        "task_time_limit": task_time_limit(settings.CELERY_VISIBILITY_TIMEOUT),
        # At-least-once delivery; every task is idempotent per order_id.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Retries waiting in a worker's timer (each holds its message unacknowledged) stay few.
        "worker_eta_task_limit": ETA_TASK_LIMIT,
        # A broker connection loss never stops a running task: it finishes and is acknowledged once
        # Redis is back (or, if it finishes while Redis is away, redelivered later to find the
        # order's step done). Terminating it could stop a confirmation between delivery and record.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_default_queue": ORDERS_QUEUE,
        "task_routes": task_routes(),
        "task_create_missing_queues": False,
        "task_publish_retry": True,
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        "task_ignore_result": True,
        "result_expires": RESULT_EXPIRES,
        # Logging is common_tasks.logs' (configured through Celery's setup_logging signal).
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        # Events for Flower and `celery events`; task-sent events come from whoever publishes.
        "worker_send_task_events": settings.CELERY_TASK_EVENTS,
        "task_send_sent_event": settings.CELERY_TASK_EVENTS,
        "enable_utc": True,
    }


def create_celery_app(settings: CommonSettings, main: str) -> Celery:
    """A Celery app named `main`, configured from `settings`; tasks are registered by the caller."""
    check_celery_version()
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
