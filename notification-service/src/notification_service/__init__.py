"""The notification service: a Celery worker on the `notifications` queue."""
