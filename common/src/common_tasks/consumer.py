"""A Celery consumer that rejects bad messages with one clear log line each.

Celery's own consumer logs a multi-line report with a traceback (and the whole body) for an unknown
task, an undecodable body or a refused content type such as pickle. The handling is the same here
(the message is rejected or acknowledged, never retried, never deserialized as pickle); only the
log line is shorter, and the result backend is not touched for an unknown task.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from celery.worker.consumer import Consumer

logger = logging.getLogger("common_tasks.consumer")


def _describe(message: Any) -> str:
    headers = message.headers or {}
    return f"message {headers.get('id', '?')} on {message.delivery_info.get('routing_key', '?')}"


class OneLineRejectionsConsumer(Consumer):  # type: ignore[misc]
    def on_unknown_message(self, body: Any, message: Any) -> None:
        logger.error("rejected %s: not a task message (content type %s)", _describe(message), message.content_type)
        message.reject_log_error(logger, self.connection_errors)
        signals.task_rejected.send(sender=self, message=message, exc=None)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = (message.headers or {}).get("task", "?")
        logger.error("rejected %s: unknown task %r", _describe(message), name)
        message.reject_log_error(logger, self.connection_errors)
        signals.task_rejected.send(sender=self, message=message, exc=exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        logger.error("rejected %s: invalid task message: %s", _describe(message), exc)
        message.reject_log_error(logger, self.connection_errors)
        signals.task_rejected.send(sender=self, message=message, exc=exc)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        logger.error(
            "rejected %s: cannot decode a %s body: %s", _describe(message), message.content_type, str(exc)[:200]
        )
        message.ack()
