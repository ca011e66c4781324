"""The Celery consumer the services run: one-line rejections, and no lost task on a broker restart.

Bad messages: Celery's own consumer logs a multi-line report with a traceback (and the whole body)
for an unknown task, an undecodable body or a refused content type such as pickle. The handling here
is the same (the message is rejected or acknowledged, never retried, never deserialized as pickle);
only the log line is shorter, and the result backend is not touched for an unknown task.

Broker connection loss: with `worker_cancel_long_running_tasks_on_connection_loss`, Celery
terminates the running acks-late tasks so that the broker redelivers them. Two things go wrong on
Redis (seen with Celery 5.6 and 5.7, kombu 5.6 and 5.7):

- `Request.cancel` records a RETRY state in the result backend first; with the backend on the same,
  unreachable Redis that raises, the request is never marked cancelled, and when the terminated task
  reports back Celery takes it for a revoke and *acknowledges* the message: the task is gone.
  (Upstream: https://github.com/celery/celery/issues/7185; Celery's shutdown path already passes
  `emit_retry=False` for acks-late tasks, the connection-loss path does not.)
- kombu's Redis transport can only put the unacknowledged messages back on the queue while it can
  still reach Redis; on a restart it cannot, and the messages wait in `unacked` for the visibility
  timeout (an hour by default).

So this consumer cancels without touching the result backend, remembers the delivery tags it held,
and, once it has reconnected, moves exactly those messages from `unacked` back to their queue
(kombu's own atomic `restore_by_tag`). Each loss and each recovery is one log line. A task that
finished just as the connection dropped cannot be acknowledged; kombu's "Couldn't ack" report for
it is shortened to one line (`quiet_ack_failures`), and its message is requeued with the others.
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

    # -- broker connection loss ------------------------------------------------------------------

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        """Replaces Celery's handler. Running acks-late tasks are stopped without being acknowledged
        and their messages requeued once reconnected (as are those of tasks that finished but could
        not be acknowledged). ETA requests (a retry waiting in this worker's timer, which Celery keeps
        across the reconnect) stay here and are acknowledged through the new connection: requeued as
        well, they would run twice at once. Any other request not started yet is requeued too:
        Celery's `on_close` drops it (pool flush, semaphore cleared), so it would never run here."""
        channel = _task_channel(self)
        running = [r for r in tuple(active_requests) if r.task.acks_late and not r.acknowledged and r.time_start]
        waiting = [r for r in tuple(reserved_requests) if not r.time_start and not r.acknowledged and r.eta]
        waiting_tags = {r.message.delivery_tag for r in waiting}
        self.interrupted_tags.update(tag for tag in _unacknowledged_tags(channel) if tag not in waiting_tags)
        self.waiting_requests.extend(waiting)
        logger.warning(
            "broker connection lost (%s); %d running task(s) stopped, %d message(s) to requeue on reconnect",
            exc or type(exc).__name__,
            len(running),
            len(self.interrupted_tags),
        )
        if channel is not None:
            channel.do_restore = False  # kombu would requeue every delivery, waiting ones too
        try:
            self.connection.collect()
        except Exception:  # noqa: BLE001 - the connection is gone; nothing left to release
            pass
        for request in running:
            try:
                request.cancel(self.pool, emit_retry=False)
            except Exception as error:  # noqa: BLE001 - one task's cancel must not stop the others
                logger.warning("could not stop task %s: %s", request.id, error)
            # Its message is requeued on reconnect; acknowledging it on the dead channel could only fail.
            request.acknowledged = True

    def connect(self) -> Any:
        connection = super().connect()
        if self.interrupted_tags or self.waiting_requests:
            self._recover(connection)
        return connection

    def _recover(self, connection: Any) -> None:
        channel = connection.default_channel
        tags, self.interrupted_tags = sorted(self.interrupted_tags), set()
        for tag in tags:
            # Atomic and idempotent: a tag that was acknowledged meanwhile is simply gone.
            channel.qos.restore_by_tag(tag)
        waiting, self.waiting_requests = self.waiting_requests, []
        for request in waiting:
            request.message.channel = channel  # its ack (after it runs) goes through the live connection
        logger.warning(
            "broker connection restored; %d interrupted message(s) requeued, %d waiting task(s) kept",
            len(tags),
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
