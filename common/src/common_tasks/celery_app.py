"""The Celery app every service uses, configured from CommonSettings only.

Setting names are Celery's documented ones (docs: Configuration and defaults).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from common_tasks.config import CommonSettings
from common_tasks.redis_state import sentinel_kwargs
from common_tasks.tasks import ORDERS_QUEUE, QUEUES, task_routes

# Publishing gives up after ~0.6 s so the HTTP API can answer 503 quickly when Redis is down.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.3}
SOCKET_CONNECT_TIMEOUT = 1.0
# Bounds synchronous Redis commands on a dead connection; the consumer's BRPOP waits only ~1 s.
SOCKET_TIMEOUT = 10.0
RESULT_EXPIRES = 3600


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


def task_time_limits(visibility_timeout: int) -> tuple[float, float]:
    """(soft, hard) seconds for every task. A task still running when the visibility timeout passes
    is redelivered while it runs, so a second copy would start: the limits stop it first, the soft
    one as an exception the task can handle (at 80 %), the hard one by killing its process (90 %)."""
    return 0.8 * visibility_timeout, 0.9 * visibility_timeout


def celery_config(settings: CommonSettings) -> dict[str, Any]:
    transport_options = redis_transport_options(settings)
    soft_limit, hard_limit = task_time_limits(settings.CELERY_VISIBILITY_TIMEOUT)
    return {
        "broker_url": settings.CELERY_BROKER_URL,
        "result_backend": settings.CELERY_RESULT_BACKEND,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": {
            "visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT,
            **sentinel_options(settings),
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": SOCKET_CONNECT_TIMEOUT,
        "redis_socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
        "redis_socket_timeout": SOCKET_TIMEOUT,
        # JSON only on the wire: a pickle message is refused before it is deserialized.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # No task outlives the visibility timeout (a task cut off is finished by the reconciler).
        "task_soft_time_limit": soft_limit,
        "task_time_limit": hard_limit,
        # At-least-once delivery; every task is idempotent per order_id.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A broker connection loss never stops a running task (common_tasks.consumer settles it later).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_default_queue": ORDERS_QUEUE,
        "task_routes": task_routes(),
        "task_create_missing_queues": False,
        "task_publish_retry": True,
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        "task_ignore_result": True,
        "result_expires": RESULT_EXPIRES,
        # Bad messages are rejected with one log line each (instead of a report with a traceback).
        "worker_consumer": "common_tasks.consumer:ServiceConsumer",
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
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
