"""One way to declare a task: a typed function of its contract's payload.

`@contract_task(app, CONTRACT)` registers `function(task, payload)` as the Celery task named by the
contract. The decorator owns what every task needs around its business step:

- parsing: the message's single `payload` keyword is validated with the contract's pydantic schema;
  a message that breaks the contract is rejected with one log line and never retried;
- retries: a transient broker or store error (Redis unreachable or timing out) is retried with
  exponential backoff and jitter, up to MAX_RETRIES times, each countdown within
  `common_tasks.celery_app.longest_countdown` of the visibility timeout; after that (or when the retry
  itself cannot be published) the attempt ends with one line, and the order's lease brings the step
  back (worker.reconciler);
- small results: a retry ends the attempt normally (nothing but None crosses the prefork pool's
  result pipe); only a bug raises, as a one-line TaskFailed without the chain of tracebacks that a
  redis-py ConnectionError carries;
- its one log line: the function returns its outcome (a string, or an `Outcome` with a level), which
  is logged once with the task's time; the line carries task, order and request ids (common_tasks.logs).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from celery import Celery, Task
from celery.exceptions import Ignore, Reject, Retry
from celery.utils.log import get_task_logger
from kombu.exceptions import OperationalError
from pydantic import BaseModel

from common_tasks.celery_app import longest_countdown
from common_tasks.celery_logs import summary
from common_tasks.tasks import ContractViolation, TaskContract

logger = get_task_logger("common_tasks.handlers")

PayloadT = TypeVar("PayloadT", bound=BaseModel)
# Only these are worth a retry: the broker or a store was briefly unreachable.
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError)
MAX_RETRIES = 10
# How long a retry that cannot be published (the broker is away) is tried again before the attempt
# gives the step up to its lease; a warm stop waits for it.
PUBLISH_PATIENCE = 10.0


class TransientError(Exception):
    """What a retry carries: the one-line summary of a transient error."""


class TaskFailed(Exception):
    """What a failed task carries back to the pool's parent: a one-line summary."""


@dataclass(frozen=True)
class Outcome:
    """What a task did, as its one log line; a plain string is an INFO outcome."""

    message: str
    level: int = logging.INFO


def backoff_seconds(base: float, retries: int, longest: float) -> float:
    """Exponential backoff with jitter in its upper half: base * 2**retries, capped at `longest`."""
    return min(longest, base * (2**retries)) * random.uniform(0.5, 1.0)


def retry_later(task: Task, reason: str, countdown: float, max_retries: int) -> Outcome:
    """Publish the task's retry and end this attempt normally, with one outcome line.

    `task.retry(throw=False)` (Celery's documented variant) publishes the retry without raising
    Retry: the attempt returns, so nothing but None crosses the prefork pool's result pipe (a Retry
    or any exception crosses as billiard's ExceptionInfo, ~30 KB with its frames). While the retry
    cannot be published (the broker is away, and Celery raises Reject with the publish error's
    traceback chain), publishing is tried again for up to PUBLISH_PATIENCE seconds, which covers a
    broker restart; then the attempt ends, and the order's lease brings the step back."""
    deadline = time.monotonic() + PUBLISH_PATIENCE
    while True:
        try:
            task.retry(countdown=countdown, max_retries=max_retries, exc=TransientError(reason), throw=False)
        except Reject as rejected:
            error = rejected.reason
            unpublished = summary(error) if isinstance(error, BaseException) else str(error)
        else:
            return Outcome(f"retry {task.request.retries + 1} in {countdown:.1f}s: {reason}", logging.WARNING)
        if time.monotonic() >= deadline:
            message = f"{reason}; its retry could not be published ({unpublished}), left to the lease"
            return Outcome(message, logging.WARNING)
        time.sleep(1.0)


def retry_transient(task: Task, reason: str, longest: float) -> Outcome:
    """The outcome of an attempt that met a transient broker or store error: its retry, or, after
    MAX_RETRIES, the step left to the order's lease."""
    if task.request.retries >= MAX_RETRIES:
        return Outcome(f"gave up after {task.request.retries} retries, left to the lease: {reason}", logging.WARNING)
    return retry_later(task, reason, backoff_seconds(1.0, task.request.retries, longest), MAX_RETRIES)


def only_payload(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The `payload` keyword of a task call; anything else breaks the contract."""
    if args or set(kwargs) != {"payload"}:
        raise ContractViolation(f"{task_name} takes exactly one keyword argument, payload")
    return kwargs["payload"]


def contract_task(
    app: Celery, contract: TaskContract[PayloadT], **options: Any
) -> Callable[[Callable[[Task, PayloadT], str | Outcome]], Task]:
    """Register the decorated `function(task, payload) -> outcome` as `contract`'s task on `app`;
    `options` are Celery task options (e.g. a time limit)."""
    visibility_timeout = app.conf.broker_transport_options["visibility_timeout"]

    def register(function: Callable[[Task, PayloadT], str | Outcome]) -> Task:
        @app.task(name=contract.name, bind=True, max_retries=MAX_RETRIES, **options)
        def task(self: Task, *args: Any, **kwargs: Any) -> None:
            try:
                payload = contract.parse(only_payload(contract.name, args, kwargs))
            except ContractViolation as violation:
                logger.error("rejected message %s: %s", self.request.id, violation)
                return
            started = time.perf_counter()
            try:
                outcome = function(self, payload)
            except (Retry, Ignore, Reject):
                raise  # the function's own decision
            except TRANSIENT_ERRORS as error:
                outcome = retry_transient(self, summary(error), longest_countdown(visibility_timeout))
            except Exception as error:  # a bug: its traceback is logged here only
                logger.exception("task failed: %s", summary(error))
                raise TaskFailed(summary(error)) from None
            if isinstance(outcome, str):
                outcome = Outcome(outcome)
            logger.log(outcome.level, "%s (%.3fs)", outcome.message, time.perf_counter() - started)

        return task  # type: ignore[no-any-return]

    return register
