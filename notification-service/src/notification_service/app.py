"""The notification service's Celery app: the confirmation task and its channel."""

from __future__ import annotations

import sys

from celery import Celery

from common_tasks.celery_app import create_celery_app
from common_tasks.runner import install_worker_steps
from common_tasks.tasks import NOTIFICATIONS_QUEUE
from notification_service.channels import load_channel
from notification_service.ledger import DeliveryLedger
from notification_service.settings import NotificationSettings
from notification_service.tasks import register_notification_tasks


def create_notification_app(settings: NotificationSettings) -> Celery:
    app = create_celery_app(settings, "notification-service")
    ledger = DeliveryLedger.from_url(
        settings.ledger_url,
        settings.REDIS_SENTINEL_MASTER,
        replicas=settings.ledger_replicas,
        failover_seconds=settings.ledger_failover_seconds,
    )
    try:
        channel = load_channel(settings.NOTIFICATION_CHANNEL)
    except (ImportError, AttributeError, TypeError) as error:
        print(
            f"configuration error: NOTIFICATION_CHANNEL: cannot load {settings.NOTIFICATION_CHANNEL!r}: {error}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    register_notification_tasks(app, settings, ledger, channel)
    install_worker_steps(app, settings, NOTIFICATIONS_QUEUE, settings.delivery_time_limit)
    return app
