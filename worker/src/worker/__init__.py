"""The order worker: a Celery worker on the `orders` queue."""
