"""Worker-path baseline: a bare Celery app with the project's exact Celery settings and a no-op task.

It is configured by the same `celery_config()` as the services (broker, JSON, acks_late,
reject_on_worker_lost, prefetch 1, transport options, queues, task events) minus the project's
logging (`bare_config`: Celery's own, as a bare Celery app has), so the very
same `orders.process` messages can be drained by either and only the task body differs. Start it with
`celery -A bench.bare_celery worker -Q orders -P prefork -c 2 --without-mingle --without-gossip`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from common_tasks.celery_app import celery_config
from common_tasks.config import CommonSettings, load_settings
from common_tasks.tasks import PROCESS_ORDER

# What the project adds on top of Celery rather than configures in it: its own logging
# (common_tasks.logs, which makes Celery leave the root logger alone).
PROJECT_ONLY = ("worker_hijack_root_logger", "worker_redirect_stdouts")


def bare_config(settings: CommonSettings) -> dict[str, Any]:
    """The project's Celery settings (task events included) without what the project adds on top of
    Celery: its logging. A bare worker has Celery's own."""
    config = celery_config(settings)
    for name in PROJECT_ONLY:
        config.pop(name, None)
    return config


app = Celery("bare", set_as_current=False)
app.conf.update(bare_config(load_settings(CommonSettings)))


@app.task(name=PROCESS_ORDER.name, shared=False)
def noop(*args: Any, **kwargs: Any) -> None:
    """Does nothing: the baseline measures Celery + Redis alone."""
    return None


def send(payload: dict[str, Any]) -> str:
    """Publish one `orders.process` message the way the services do (by name, result ignored)."""
    return app.send_task(
        PROCESS_ORDER.name, kwargs={"payload": payload}, queue=PROCESS_ORDER.queue, ignore_result=True
    ).id
