"""The module `celery -A notification_service` finds (Celery's convention: `<package>.celery`):
the notification service's Celery app, built from the environment when imported. The
`notification-service` console script runs this same `app`."""

from __future__ import annotations

from common_tasks.config import load_settings
from notification_service.app import create_notification_app
from notification_service.settings import NotificationSettings

app = create_notification_app(load_settings(NotificationSettings))
