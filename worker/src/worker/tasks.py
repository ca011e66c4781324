"""The tasks of the `orders` queue: only their business steps. Each is idempotent per order_id
(see order_store.store); parsing, rejection and retries are common_tasks.handlers'."""

from __future__ import annotations

import logging
import time

from celery import Celery, Task

from common_tasks.handlers import Outcome, contract_task
from common_tasks.schemas import ProcessOrder, RecordNotification, SendOrderConfirmation, order_total
from common_tasks.tasks import PROCESS_ORDER, RECORD_NOTIFICATION, send_order_confirmation
from order_store.store import Completion, OrderStore
from worker.settings import OrderWorkerSettings


def send_confirmation(app: Celery, order_id: str, completion: Completion) -> None:
    """The next step of a completed order: its confirmation, to notification-service."""
    confirmation = SendOrderConfirmation(
        order_id=order_id, customer_email=completion.customer_email, total=completion.total
    )
    send_order_confirmation(app, confirmation)


def register_order_tasks(app: Celery, settings: OrderWorkerSettings, store: OrderStore) -> None:
    @contract_task(app, PROCESS_ORDER)
    def process_order(task: Task, order: ProcessOrder) -> str | Outcome:
        worker_name = task.request.hostname or "worker"
        previous, attempts = store.start_processing(order.order_id, worker_name)
        if previous is None:
            return Outcome(f"order {order.order_id}: no such order in the store, message dropped", logging.WARNING)
        if previous not in ("accepted", "processing"):
            # A second copy (a redelivery, or the reconciler's): the step is done. A confirmation that
            # was never sent is the reconciler's to send once the order's lease expires.
            return f"order {order.order_id} already {previous}"
        if attempts > settings.ORDER_MAX_ATTEMPTS:
            reason = f"gave up after {attempts - 1} attempts that never finished"
            store.fail(order.order_id, reason)
            return Outcome(f"order {order.order_id} failed: {reason}", logging.ERROR)
        if settings.WORKER_SIMULATED_WORK_SECONDS:
            time.sleep(settings.WORKER_SIMULATED_WORK_SECONDS)
        total = str(order_total(order.items))
        completion = store.complete(order.order_id, total, worker_name)
        if not completion.completed_now:
            return f"order {order.order_id} already completed by another copy"
        outcome = f"order {order.order_id} completed: total {total}, {len(order.items)} item(s)"
        if completion.awaits_notification:
            send_confirmation(app, order.order_id, completion)
            outcome += ", confirmation sent"
        return outcome

    @contract_task(app, RECORD_NOTIFICATION)
    def record_notification(task: Task, outcome: RecordNotification) -> str:
        if store.record_notification(outcome.order_id, outcome.outcome, outcome.delivery_count(), outcome.detail):
            return f"order {outcome.order_id}: notification {outcome.outcome} recorded"
        return f"order {outcome.order_id}: notification outcome already recorded"
