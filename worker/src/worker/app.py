"""The worker's Celery app: the order tasks and the reconciler on the shared configuration."""

from __future__ import annotations

from celery import Celery

from common_tasks.celery_app import create_celery_app, task_time_limit
from common_tasks.runner import install_worker_steps
from common_tasks.tasks import ORDERS_QUEUE
from order_store.store import OrderStore
from worker.reconciler import install_reconciler
from worker.settings import OrderWorkerSettings
from worker.tasks import register_order_tasks


def create_worker_app(settings: OrderWorkerSettings) -> Celery:
    app = create_celery_app(settings, "worker")
    store = OrderStore.from_url(settings.order_store_url, settings.REDIS_SENTINEL_MASTER)
    register_order_tasks(app, settings, store)
    install_worker_steps(app, settings, ORDERS_QUEUE, task_time_limit(settings.CELERY_VISIBILITY_TIMEOUT))
    install_reconciler(app, store, settings.RECONCILE_AFTER_SECONDS, settings.RECONCILE_INTERVAL_SECONDS)
    return app
