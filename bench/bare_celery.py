"""Baseline worker: a bare Celery app with the project's exact Celery settings and a no-op task.

It is configured by the same `celery_config()` as the services (broker, JSON, acks_late,
reject_on_worker_lost, prefetch 1, transport options, queues, consumer), so the very same
`orders.process` messages can be drained by either and only the task body differs. Start it with
`celery -A bench.bare_celery worker -Q orders -P prefork -c 2 --without-mingle --without-gossip`.
"""

from __future__ import annotations

from typing import Any

from common_tasks.celery_app import create_celery_app
from common_tasks.config import CommonSettings, load_settings
from common_tasks.tasks import PROCESS_ORDER

app = create_celery_app(load_settings(CommonSettings), "bare")


@app.task(name=PROCESS_ORDER.name)
def noop(*args: Any, **kwargs: Any) -> None:
    """Does nothing: the baseline measures Celery + Redis alone."""
    return None


def send(payload: dict[str, Any]) -> str:
    """Publish one `orders.process` message the way the services do (by name, result ignored)."""
    return app.send_task(
        PROCESS_ORDER.name, kwargs={"payload": payload}, queue=PROCESS_ORDER.queue, ignore_result=True
    ).id
