"""Console script `notification-service`: the Celery worker of the `notifications` queue
(`notification-service healthcheck` probes it)."""

from __future__ import annotations

import sys

from common_tasks.cli import worker_service_main
from common_tasks.tasks import NOTIFICATIONS_QUEUE
from notification_service.settings import NotificationSettings


def main(argv: list[str] | None = None) -> None:
    app_module = "notification_service.celery"
    sys.exit(worker_service_main("notification-service", NotificationSettings, NOTIFICATIONS_QUEUE, app_module, argv))


if __name__ == "__main__":
    main()
