"""The Celery consumer the services run: one-line rejections, and no lost task on a broker restart.

Bad messages: Celery's own consumer logs a multi-line report with a traceback (and the whole body)
for an unknown task, an undecodable body or a refused content type such as pickle. The handling here
is the same (the message is rejected or acknowledged, never retried, never deserialized as pickle);
only the log line is shorter, and the result backend is not touched for an unknown task.

Broker connection loss: Celery either lets the running acks-late tasks run on and fails to
acknowledge them on the dead channel (so Redis redelivers them after the visibility timeout, an hour
by default, and they run twice), or, with `worker_cancel_long_running_tasks_on_connection_loss`,
terminates them so that the broker redelivers them. Terminating is worse: a task stopped between an
outside effect (a confirmation delivered) and recording it does it again when redelivered. And on
Redis it goes wrong besides (seen with Celery 5.6 and 5.7, kombu 5.6 and 5.7): `Request.cancel`
records a RETRY state in the unreachable result backend first, raises, and Celery then takes the
terminated task for a revoke and *acknowledges* its message (celery/celery#7185); and kombu can only
put unacknowledged messages back while it still reaches Redis.

So this consumer lets the running tasks finish, and acknowledges (or rejects) each through the new
connection once it has reconnected (kombu's Redis acknowledgement removes the message from
`unacked` by its delivery tag, whatever the channel). The messages it held but had not started, and
those of tasks that finished while the broker was unreachable (their acknowledgement failed), are
moved from `unacked` back to their queue once reconnected (kombu's own atomic `restore_by_tag`).
Each loss and each recovery is one log line; kombu's "Couldn't ack" report for a task that finished
during the outage is shortened to one line (`quiet_ack_failures`).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from celery.worker.consumer import Consumer
from celery.worker.state import active_requests, reserved_requests

logger = logging.getLogger("common_tasks.consumer")


def _describe(message: Any) -> str:
    headers = message.headers or {}
    return f"message {headers.get('id', '?')} on {message.delivery_info.get('routing_key', '?')}"


def _task_channel(consumer: Consumer) -> Any:
    return getattr(getattr(consumer, "task_consumer", None), "channel", None)


def _unacknowledged_tags(channel: Any) -> list[str]:
    """Delivery tags this channel holds and has not acknowledged (kombu's virtual QoS)."""
    qos = getattr(channel, "qos", None)
    delivered = getattr(qos, "_delivered", None) or {}
    settled = getattr(qos, "_dirty", set())
    return [tag for tag in list(delivered) if tag not in settled]


class QuietAckFailures(logging.Filter):
    """kombu reports a failed ack (the broker connection is down) as CRITICAL with a traceback; the
    message simply stays unacknowledged and is requeued on reconnect, so one warning line says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(("Couldn't ack", "Couldn't reject")):
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg += " (the message is requeued when the broker is back)"
        return True


def quiet_ack_failures() -> None:
    request_logger = logging.getLogger("celery.worker.request")  # the logger Celery's acks report to
    if not any(isinstance(f, QuietAckFailures) for f in request_logger.filters):
        request_logger.addFilter(QuietAckFailures())


class ServiceConsumer(Consumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        quiet_ack_failures()
        self.interrupted_tags: set[str] = set()
        self.waiting_requests: list[Any] = []
        self.running_requests: list[Any] = []

    # -- broker connection loss ------------------------------------------------------------------

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        """Replaces Celery's handler. Running tasks finish, and their messages are settled through the
        new connection. ETA requests (a retry waiting in this worker's timer, which Celery keeps across
        the reconnect) stay here and are acknowledged through the new connection too: requeued, they
        would run twice at once. Any other request not started yet is requeued: Celery's `on_close`
        drops it (pool flush, semaphore cleared), so it would never run here."""
        channel = _task_channel(self)
        running = [r for r in tuple(active_requests) if r.task.acks_late and not r.acknowledged and r.time_start]
        waiting = [r for r in tuple(reserved_requests) if not r.time_start and not r.acknowledged and r.eta]
        kept = {r.message.delivery_tag for r in (*running, *waiting)}
        self.interrupted_tags.update(tag for tag in _unacknowledged_tags(channel) if tag not in kept)
        self.waiting_requests.extend(waiting)
        self.running_requests.extend(running)
        logger.warning(
            "broker connection lost (%s); %d running task(s) left to finish, %d message(s) to requeue on reconnect",
            exc or type(exc).__name__,
            len(running),
            len(self.interrupted_tags),
        )
        if channel is not None:
            channel.do_restore = False  # kombu would requeue every delivery, running ones too
        try:
            self.connection.collect()
        except Exception:  # noqa: BLE001 - the connection is gone; nothing left to release
            pass

    def connect(self) -> Any:
        connection = super().connect()
        if self.interrupted_tags or self.waiting_requests or self.running_requests:
            self._recover(connection)
        return connection

    def _recover(self, connection: Any) -> None:
        channel = connection.default_channel
        running, self.running_requests = self.running_requests, []
        # A task that finished meanwhile could not be acknowledged: its message goes back to the queue.
        finished = {r.message.delivery_tag for r in running if r not in active_requests}
        tags, self.interrupted_tags = sorted(self.interrupted_tags | finished), set()
        for tag in tags:
            # Atomic and idempotent: a tag that was acknowledged meanwhile is simply gone.
            channel.qos.restore_by_tag(tag)
        waiting, self.waiting_requests = self.waiting_requests, []
        going_on = [r for r in running if r in active_requests]
        for request in (*waiting, *going_on):
            request.message.channel = channel  # its ack (once it has run) goes through the live connection
        logger.warning(
            "broker connection restored; %d message(s) requeued, %d running and %d waiting task(s) kept",
            len(tags),
            len(going_on),
            len(waiting),
        )

    # -- bad messages ----------------------------------------------------------------------------

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
