"""Console script `notification-service`: the Celery worker of the `notifications` queue."""

from __future__ import annotations

import sys

from celery import Celery

from common_tasks.celery_app import create_celery_app
from common_tasks.config import load_settings
from common_tasks.runner import run_worker_service
from common_tasks.store import OrderStore
from common_tasks.tasks import NOTIFICATIONS_QUEUE
from notification_service.channels import load_channel
from notification_service.settings import NotificationSettings
from notification_service.tasks import register_notification_tasks


def create_notification_app(settings: NotificationSettings) -> Celery:
    app = create_celery_app(settings, "notification-service")
    store = OrderStore.from_url(settings.order_store_url)
    try:
        channel = load_channel(settings.NOTIFICATION_CHANNEL)
    except (ImportError, AttributeError, TypeError) as error:
        print(
            f"configuration error: NOTIFICATION_CHANNEL: cannot load {settings.NOTIFICATION_CHANNEL!r}: {error}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    register_notification_tasks(app, settings, store, channel)
    return app


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(NotificationSettings)
    arguments = sys.argv[1:] if argv is None else argv
    sys.exit(
        run_worker_service(
            lambda: create_notification_app(settings), settings, NOTIFICATIONS_QUEUE, "notification-service", arguments
        )
    )


if __name__ == "__main__":
    main()
