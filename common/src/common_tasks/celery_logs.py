"""Celery's multi-line reports, shortened to one line each (a filter on the service's log handler).

This changes only what is logged, never what Celery does: a bad message is still rejected or
acknowledged by Celery's own consumer, a lost broker connection is still handled by Celery and kombu.
Celery writes each of these as a report of several lines, often with a traceback and the whole
message body (customer e-mail addresses included); here each becomes one line. A report whose text
Celery changes is simply logged as Celery wrote it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable


def first_line(value: object, limit: int = 300) -> str:
    lines = [line.strip() for line in str(value).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    text = lines[0] if not lines[0].endswith(":") or len(lines) == 1 else f"{lines[0]} {lines[1]}"
    return text[:limit]


def summary(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its text."""
    return f"{type(error).__name__}: {first_line(error)}".rstrip(": ")


def _args(record: logging.LogRecord) -> tuple[object, ...]:
    return record.args if isinstance(record.args, tuple) else ()


# The first words of each report (celery/worker/consumer/consumer.py, celery/worker/request.py,
# kombu/message.py, Python's warnings) and the one line that replaces it.
_REPORTS: tuple[tuple[str, Callable[[logging.LogRecord], str]], ...] = (
    ("Received unregistered task", lambda r: f"rejected a message: unknown task {first_line(_args(r)[0])}"),
    ("Received invalid task message", lambda r: f"rejected a message: invalid task message: {first_line(_args(r)[0])}"),
    ("Can't decode message body",
     lambda r: f"rejected a message: cannot decode a {_args(r)[1]} body: {first_line(_args(r)[0])}"),
    ("Received and deleted unknown message", lambda r: "rejected a message: not a task message"),
    ("consumer: Connection to broker lost", lambda r: "broker connection lost; reconnecting"),
    ("consumer: Cannot connect to",
     lambda r: f"broker unreachable: {first_line(_args(r)[1])}; {first_line(_args(r)[2])}"),
    ("Temporarily reducing the prefetch count", lambda r: first_line(r.msg)),
    ("Task handler raised error", lambda r: f"a pool process ended its task: {first_line(_args(r)[0])}"),
    ("Couldn't ack", lambda r: "a message could not be acknowledged (broker connection lost); Redis redelivers it"),
    ("Couldn't reject", lambda r: "a message could not be rejected (broker connection lost); Redis redelivers it"),
)  # fmt: skip


class OneLineCeleryReports(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings":  # a warning's text, with the line of source that raised it
            record.msg, record.args = first_line(record.getMessage()), ()
            return True
        if not isinstance(record.msg, str):
            return True
        for start, one_line in _REPORTS:
            if record.msg.startswith(start):
                try:
                    message = one_line(record)
                except IndexError:
                    return True  # a report of another shape: leave it as Celery wrote it
                if record.exc_info and record.exc_info[1] is not None and start.startswith("consumer: Connection"):
                    message += f": {type(record.exc_info[1]).__name__}: {first_line(record.exc_info[1])}"
                record.msg, record.args = message, ()
                record.exc_info = record.exc_text = None
                if record.levelno > logging.WARNING and start.startswith(("consumer:", "Couldn't")):
                    record.levelno, record.levelname = logging.WARNING, "WARNING"
                return True
        return True
