"""Console script `worker`: runs the Celery worker of the `orders` queue (`worker healthcheck` probes it)."""

from __future__ import annotations

import sys

from celery import Celery

from common_tasks.celery_app import create_celery_app
from common_tasks.config import load_settings
from common_tasks.runner import run_worker_service
from common_tasks.store import OrderStore
from common_tasks.tasks import ORDERS_QUEUE
from worker.reconciler import install_reconciler
from worker.settings import OrderWorkerSettings
from worker.tasks import register_order_tasks


def create_worker_app(settings: OrderWorkerSettings) -> Celery:
    app = create_celery_app(settings, "worker")
    store = OrderStore.from_url(settings.order_store_url)
    register_order_tasks(app, settings, store)
    install_reconciler(app, store, settings.reconcile_after, settings.RECONCILE_INTERVAL_SECONDS)
    return app


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(OrderWorkerSettings)
    arguments = sys.argv[1:] if argv is None else argv
    sys.exit(run_worker_service(lambda: create_worker_app(settings), settings, ORDERS_QUEUE, "worker", arguments))


if __name__ == "__main__":
    main()
