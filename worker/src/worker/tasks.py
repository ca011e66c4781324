"""The tasks of the `orders` queue. Each is idempotent per order_id (see order_store.store)."""

from __future__ import annotations

import time
from typing import Any

import redis
from celery import Celery, Task
from celery.utils.log import get_task_logger
from kombu.exceptions import OperationalError

from common_tasks.schemas import SendOrderConfirmation, order_total
from common_tasks.tasks import PROCESS_ORDER, RECORD_NOTIFICATION, ContractViolation, send_order_confirmation
from order_store.store import OrderStore
from worker.settings import OrderWorkerSettings

logger = get_task_logger("worker.tasks")

# Only these are worth a retry: the broker or the store was briefly unreachable.
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError)
RETRY_OPTIONS: dict[str, Any] = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 10,
}


def only_payload(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The `payload` keyword of a task call; anything else breaks the contract."""
    if args or set(kwargs) != {"payload"}:
        raise ContractViolation(f"{task_name} takes exactly one keyword argument, payload")
    return kwargs["payload"]


def register_order_tasks(app: Celery, settings: OrderWorkerSettings, store: OrderStore) -> None:
    @app.task(name=PROCESS_ORDER.name, bind=True, **RETRY_OPTIONS)
    def process_order(self: Task, *args: Any, **kwargs: Any) -> None:
        try:
            order = PROCESS_ORDER.parse(only_payload(PROCESS_ORDER.name, args, kwargs))
        except ContractViolation as violation:
            logger.error("rejected message %s: %s", self.request.id, violation)
            return
        worker_name = self.request.hostname or "worker"
        previous = store.start_processing(order.order_id, worker_name)
        if previous is None:
            logger.warning("order %s: no such order in the store, message dropped", order.order_id)
            return
        if previous in ("accepted", "processing"):
            if settings.WORKER_SIMULATED_WORK_SECONDS:
                time.sleep(settings.WORKER_SIMULATED_WORK_SECONDS)
            total = str(order_total(order.items))
            completion = store.complete(order.order_id, total, worker_name)
            if completion.completed_now:
                logger.info("order %s completed: total %s, %d item(s)", order.order_id, total, len(order.items))
        else:
            # A redelivery: the order went further already; only its next step may still be due.
            logger.info("order %s already %s", order.order_id, previous)
            completion = store.completion(order.order_id)
        if completion.awaits_notification:
            confirmation = SendOrderConfirmation(
                order_id=order.order_id, customer_email=completion.customer_email, total=completion.total
            )
            send_order_confirmation(app, confirmation)

    @app.task(name=RECORD_NOTIFICATION.name, bind=True, **RETRY_OPTIONS)
    def record_notification(self: Task, *args: Any, **kwargs: Any) -> None:
        try:
            outcome = RECORD_NOTIFICATION.parse(only_payload(RECORD_NOTIFICATION.name, args, kwargs))
        except ContractViolation as violation:
            logger.error("rejected message %s: %s", self.request.id, violation)
            return
        if store.record_notification(outcome.order_id, outcome.outcome, outcome.delivery_count(), outcome.detail):
            logger.info("order %s: notification %s", outcome.order_id, outcome.outcome)
        else:
            logger.info("order %s: notification outcome already recorded", outcome.order_id)
