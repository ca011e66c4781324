"""Console script `worker`: runs the Celery worker of the `orders` queue (`worker healthcheck` probes it)."""

from __future__ import annotations

import sys

from common_tasks.cli import worker_service_main
from common_tasks.tasks import ORDERS_QUEUE
from worker.settings import OrderWorkerSettings


def main(argv: list[str] | None = None) -> None:
    sys.exit(worker_service_main("worker", OrderWorkerSettings, ORDERS_QUEUE, "worker.celery", argv))


if __name__ == "__main__":
    main()
