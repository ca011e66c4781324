"""The tasks of the `orders` queue: only their business steps. Each is idempotent per order_id
(see order_store.store); parsing, rejection and retries are common_tasks.handlers'."""

from __future__ import annotations

import time

from celery import Celery, Task
from celery.utils.log import get_task_logger

from common_tasks.handlers import contract_task
from common_tasks.schemas import ProcessOrder, RecordNotification, SendOrderConfirmation, order_total
from common_tasks.tasks import PROCESS_ORDER, RECORD_NOTIFICATION, send_order_confirmation
from order_store.store import Completion, OrderStore
from worker.settings import OrderWorkerSettings

logger = get_task_logger("worker.tasks")


def send_confirmation(app: Celery, order_id: str, completion: Completion) -> None:
    """The next step of a completed order: its confirmation, to notification-service."""
    confirmation = SendOrderConfirmation(
        order_id=order_id, customer_email=completion.customer_email, total=completion.total
    )
    send_order_confirmation(app, confirmation)


def register_order_tasks(app: Celery, settings: OrderWorkerSettings, store: OrderStore) -> None:
    @contract_task(app, PROCESS_ORDER)
    def process_order(task: Task, order: ProcessOrder) -> None:
        worker_name = task.request.hostname or "worker"
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
            send_confirmation(app, order.order_id, completion)

    @contract_task(app, RECORD_NOTIFICATION)
    def record_notification(task: Task, outcome: RecordNotification) -> None:
        if store.record_notification(outcome.order_id, outcome.outcome, outcome.delivery_count(), outcome.detail):
            logger.info("order %s: notification %s", outcome.order_id, outcome.outcome)
        else:
            logger.info("order %s: notification outcome already recorded", outcome.order_id)
