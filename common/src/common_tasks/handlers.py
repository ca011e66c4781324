"""One way to declare a task: a typed function of its contract's payload.

`@contract_task(app, CONTRACT)` registers `function(task, payload)` as the Celery task named by the
contract. The decorator owns what every task needs around its business step:

- parsing: the message's single `payload` keyword is validated with the contract's pydantic schema;
  a message that breaks the contract is rejected with one log line and never retried;
- retries: a transient broker or store error (Redis unreachable or timing out) is retried with
  exponential backoff and jitter, up to 10 times;
- time limits: Celery's `task_soft_time_limit`/`task_time_limit` from the app's configuration
  (derived from the visibility timeout in `common_tasks.celery_app`), or the task's own;
- its one log line: the function returns its outcome (a string, or an `Outcome` with a level), which
  is logged once with the task's time; the line carries task, order and request ids (common_tasks.logs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from celery import Celery, Task
from celery.utils.log import get_task_logger
from kombu.exceptions import OperationalError
from pydantic import BaseModel

from common_tasks.tasks import ContractViolation, TaskContract

logger = get_task_logger("common_tasks.handlers")

PayloadT = TypeVar("PayloadT", bound=BaseModel)
# Only these are worth a retry: the broker or a store was briefly unreachable.
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError)
RETRY_OPTIONS: dict[str, Any] = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 10,
}


@dataclass(frozen=True)
class Outcome:
    """What a task did, as its one log line; a plain string is an INFO outcome."""

    message: str
    level: int = logging.INFO


def only_payload(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The `payload` keyword of a task call; anything else breaks the contract."""
    if args or set(kwargs) != {"payload"}:
        raise ContractViolation(f"{task_name} takes exactly one keyword argument, payload")
    return kwargs["payload"]


def contract_task(
    app: Celery, contract: TaskContract[PayloadT], **options: Any
) -> Callable[[Callable[[Task, PayloadT], str | Outcome]], Task]:
    """Register the decorated `function(task, payload) -> outcome` as `contract`'s task on `app`;
    `options` are Celery task options (e.g. time limits) on top of the retry policy."""

    def register(function: Callable[[Task, PayloadT], str | Outcome]) -> Task:
        @app.task(name=contract.name, bind=True, **{**RETRY_OPTIONS, **options})
        def task(self: Task, *args: Any, **kwargs: Any) -> None:
            try:
                payload = contract.parse(only_payload(contract.name, args, kwargs))
            except ContractViolation as violation:
                logger.error("rejected message %s: %s", self.request.id, violation)
                return
            started = time.perf_counter()
            outcome = function(self, payload)
            if isinstance(outcome, str):
                outcome = Outcome(outcome)
            logger.log(outcome.level, "%s (%.3fs)", outcome.message, time.perf_counter() - started)

        return task  # type: ignore[no-any-return]

    return register
