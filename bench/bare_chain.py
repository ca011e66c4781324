"""End-to-end baseline: the project's three hops written in bare Celery, with no-op bodies.

`orders.process` -> `notifications.send_order_confirmation` -> `orders.record_notification`, each a
task that only sends the next one by name (`send_task`, result ignored) on the queue the project
uses. The settings are the project's own `celery_config()` (so they cannot drift: broker, JSON,
acks_late, reject_on_worker_lost, prefetch 1, time limits, transport options, queues, routes, task
events) minus what the project adds on top of Celery: its logging (so a bare
worker logs Celery's own "received" and "succeeded" lines at INFO) and its bootsteps (heartbeat
file, stall watchdog, reconciler), which this module never installs.

The last hop records when the order finished, `HSET bench:done <order_id> <time.time()>`: the one
observable the benchmark needs (the project's equivalent is the order record's `updated_at`,
written by its own last hop). Run one worker per queue, as the project does:

    celery -A bench.bare_chain worker -Q orders -P prefork -c 2 --without-mingle --without-gossip
    celery -A bench.bare_chain worker -Q notifications -P prefork -c 2 --without-mingle --without-gossip
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery

from bench.bare_celery import bare_config
from common_tasks.config import CommonSettings, load_settings
from common_tasks.tasks import PROCESS_ORDER, RECORD_NOTIFICATION, SEND_ORDER_CONFIRMATION, TaskContract

DONE_KEY = "bench:done"


settings = load_settings(CommonSettings)
app = Celery("bare-chain", set_as_current=False)
app.conf.update(bare_config(settings))
_client: tuple[int, redis.Redis] | None = None


def done_client() -> redis.Redis:
    """One client per (pool) process, made after the fork."""
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), redis.Redis.from_url(settings.CELERY_BROKER_URL))
    return _client[1]


# shared=False: Celery adds "shared" tasks to every app, and bench.bare_celery registers a no-op
# `orders.process` of its own.


def send(contract: TaskContract[Any], payload: dict[str, Any]) -> str:
    """Send the hop named by `contract` by name, result ignored."""
    return app.send_task(contract.name, kwargs={"payload": payload}, queue=contract.queue, ignore_result=True).id


@app.task(name=PROCESS_ORDER.name, shared=False)
def process(payload: dict[str, Any]) -> None:
    send(SEND_ORDER_CONFIRMATION, payload)


@app.task(name=SEND_ORDER_CONFIRMATION.name, shared=False)
def send_confirmation(payload: dict[str, Any]) -> None:
    send(RECORD_NOTIFICATION, payload)


@app.task(name=RECORD_NOTIFICATION.name, shared=False)
def record_notification(payload: dict[str, Any]) -> None:
    done_client().hset(DONE_KEY, payload["order_id"], repr(time.time()))
