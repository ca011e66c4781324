"""Logging for every service, configured once per process with the standard `logging` module.

Each record carries the service name and, where known, the task (name, id), the `order_id` and the
HTTP request id (`request_id`), so `grep <order_id>` over all services' logs shows one order's life:

- in a Celery task, from the task's request: `order_id`/`request_id` travel as message headers
  (set by `common_tasks.tasks.dispatch`), the task name and id are Celery's;
- elsewhere (order-service), from `log_context`, set per HTTP request.

`LOG_FORMAT=text` writes one line per record; `json` one JSON object per line (python-json-logger)
with the same fields. `LOG_TASK_LINES=outcome` drops Celery's "received" and "succeeded" lines,
so a task leaves the one outcome line its handler writes (or Celery's retry or failure line).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from common_tasks.celery_logs import OneLineCeleryReports

# The fields every record gets (None when not known); `service` is the process's.
CONTEXT_FIELDS = ("task_name", "task_id", "order_id", "request_id")
# Message headers that carry the correlation from task to task.
CORRELATION_HEADERS = ("order_id", "request_id")

NO_CONTEXT: Mapping[str, str] = MappingProxyType({})
log_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("log_context", default=NO_CONTEXT)

# UTC times with milliseconds, e.g. 2026-11-29T07:48:27.123Z.
TEXT_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(service)s %(name)s%(context)s: %(message)s"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
JSON_FIELDS = ("levelname", "service", "name", "message", *CONTEXT_FIELDS)


def bind_context(**fields: str) -> None:
    """Add `fields` to the current context until it is reset (e.g. the order id once it exists)."""
    log_context.set({**log_context.get(), **fields})


def current_task_fields() -> dict[str, Any]:
    """Task name, id and correlation headers of the Celery task running in this thread, if any."""
    if "celery" not in sys.modules:
        return {}
    from celery import current_task

    task = current_task
    if not task or task.request.called_directly:
        return {}
    request = task.request
    fields: dict[str, Any] = {"task_name": task.name, "task_id": request.id}
    for header in CORRELATION_HEADERS:
        value = getattr(request, header, None)
        if value is not None:
            fields[header] = value
    if "order_id" not in fields:  # a message sent without headers: the contract's payload names it
        payload = (request.kwargs or {}).get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("order_id"), str):
            fields["order_id"] = payload["order_id"]
    return fields


def context_fields() -> dict[str, Any]:
    """The context of what runs now: the Celery task's fields, then this request's `log_context`."""
    return {**current_task_fields(), **log_context.get()}


def correlation() -> dict[str, str]:
    """The correlation fields to pass on to the next task: this task's or this request's."""
    fields = context_fields()
    return {name: fields[name] for name in CORRELATION_HEADERS if fields.get(name)}


class ContextFilter(logging.Filter):
    """Adds `service` and the context fields to every record; drops Celery's per-task chatter
    when asked to (a filter on the handler, so no logger's level changes)."""

    def __init__(self, service: str, drop_celery_task_lines: bool) -> None:
        super().__init__()
        self.service = service
        self.dropped: tuple[str, ...] = ()
        if drop_celery_task_lines:
            from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS

            self.dropped = (LOG_RECEIVED, LOG_SUCCESS)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self.dropped:
            return False
        fields = context_fields()
        record.service = self.service
        for name in CONTEXT_FIELDS:
            setattr(record, name, fields.get(name))
        known = [f"{name.removesuffix('_name')}={fields[name]}" for name in CONTEXT_FIELDS if fields.get(name)]
        record.context = f" [{' '.join(known)}]" if known else ""
        return True


def log_handler(service: str, log_format: str, drop_celery_task_lines: bool = False) -> logging.Handler:
    """A stderr handler writing `log_format` (text or json) with the context fields."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter(
            list(JSON_FIELDS),
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            reserved_attrs=[*RESERVED_ATTRS, "context"],  # `context` is the text format's summary
        )
    else:
        formatter = logging.Formatter(TEXT_FORMAT, datefmt=TIME_FORMAT)
        formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(OneLineCeleryReports())
    handler.addFilter(ContextFilter(service, drop_celery_task_lines))
    return handler


def configure_logging(service: str, level: str, log_format: str, task_lines: str = "outcome") -> logging.Handler:
    """Send every record of this process through one handler on the root logger."""
    handler = log_handler(service, log_format, drop_celery_task_lines=task_lines == "outcome")
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings become records too (one JSON object per line)
    return handler
