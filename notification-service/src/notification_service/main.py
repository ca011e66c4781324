"""Console script `notification-service`: the Celery worker of the `notifications` queue
(`notification-service healthcheck` probes it)."""

from __future__ import annotations

import sys

from common_tasks.cli import worker_service_main
from common_tasks.tasks import NOTIFICATIONS_QUEUE
from notification_service.settings import NotificationSettings


def main(argv: list[str] | None = None) -> None:
    factory = "notification_service.app:create_notification_app"
    sys.exit(worker_service_main("notification-service", NotificationSettings, NOTIFICATIONS_QUEUE, factory, argv))


if __name__ == "__main__":
    main()
