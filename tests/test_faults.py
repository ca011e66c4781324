"""Fault injection against the real stack. Every scenario ends with the same audit: orders accepted =
orders completed = notifications delivered, each exactly once (counting deliveries, not task states).

The API's behaviour with Redis down is in order-service/tests/test_api.py, hostile HTTP input in
order-service/tests/test_hostile_input.py, and channel retries in notification-service/tests.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from common_tasks.schemas import ProcessOrder
from common_tasks.tasks import NOTIFICATIONS_QUEUE, ORDERS_QUEUE, send_process_order
from full_stack import STACK_ENV, OrderLoad, Stack, sample_order
from order_store.store import OrderStore
from stack_testkit import (
    RedisServer,
    ServiceLauncher,
    http_request,
    report_figure,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
SCRIPTED_CHANNELS = str(ROOT / "notification-service" / "tests")


@pytest.fixture
def aof_redis(services: ServiceLauncher, tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, persisted like the compose file's (appendonly, everysec)."""
    server = RedisServer(tmp_path / "redis-aof").start(appendonly=True)
    yield server
    services.stop_all()  # before the Redis they talk to goes away
    server.stop()


def stack_on(launcher: ServiceLauncher, server: RedisServer) -> Stack:
    return Stack(launcher.on(server), server)


def worker_logs(stack: Stack) -> str:
    return "".join(p.log() for p in stack.launcher.started if p.name == "worker")


def test_reconciler_finishes_orders_whose_messages_vanished(
    services: ServiceLauncher, redis_server: RedisServer
) -> None:
    stack = Stack(services, redis_server)
    stack.processes["notification-service"] = services.start("notification-service", **STACK_ENV)
    stack.processes["order-service"], stack.api = services.start_http("order-service", **STACK_ENV)
    order_ids = [stack.post_order() for _ in range(5)]
    client = redis_server.client()
    assert client.llen(ORDERS_QUEUE) == 5
    client.delete(ORDERS_QUEUE)  # the messages are gone, as if a killed worker had lost them

    started = time.monotonic()
    services.start("worker", RECONCILE_AFTER_SECONDS="2", RECONCILE_INTERVAL_SECONDS="0.5")
    stack.audit(order_ids, timeout=60)
    assert worker_logs(stack).count("reconciler: re-dispatched order") == 5
    report_figure(f"reconciler: 5 orders with lost messages finished in {time.monotonic() - started:.1f}s")


def test_worker_sigkill_mid_task_completes_the_order_within_its_lease(
    services: ServiceLauncher, redis_server: RedisServer
) -> None:
    # Redis would redeliver the message only after the visibility timeout (an hour by default); the
    # order's lease (5 s here) is what brings it back once a worker runs again.
    lease = 5
    env = {
        "RECONCILE_AFTER_SECONDS": str(lease),
        "RECONCILE_INTERVAL_SECONDS": "1",
        "WORKER_SIMULATED_WORK_SECONDS": "2",
    }
    stack = Stack(services, redis_server).start(**env)
    order_id = stack.post_order()
    wait_until(lambda: stack.order(order_id)["status"] == "processing", 15, "the order never started")
    stack.processes["worker"].kill()  # kill -9 of the worker and its pool children
    killed_at = time.monotonic()
    assert stack.order(order_id)["status"] == "processing"

    services.start("worker", **env)
    [view] = stack.audit([order_id], timeout=lease + 20)
    report_figure(
        f"worker SIGKILL mid-task: 1 kill, order re-sent by its lease and completed once "
        f"{time.monotonic() - killed_at:.1f}s later (lease {lease}s, visibility timeout 3600s)"
    )
    assert worker_logs(stack).count(f"order {order_id} completed") == 1
    assert f"reconciler: re-dispatched order {order_id} (status processing" in worker_logs(stack)
    assert view["notifications_sent"] == 1


def test_killed_pool_child_is_requeued_at_once(services: ServiceLauncher, redis_server: RedisServer) -> None:
    stack = Stack(services, redis_server).start(WORKER_SIMULATED_WORK_SECONDS="2", RECONCILE_AFTER_SECONDS="600")
    order_id = stack.post_order()
    wait_until(lambda: stack.order(order_id)["status"] == "processing", 15, "the order never started")
    worker_pid = stack.processes["worker"].process.pid
    children = subprocess.run(["pgrep", "-P", str(worker_pid)], capture_output=True, text=True).stdout.split()
    assert children, "the prefork pool has no children"
    for child in children:
        os.kill(int(child), signal.SIGKILL)
    started = time.monotonic()
    stack.audit([order_id], timeout=30)
    report_figure(
        f"pool child SIGKILL: {len(children)} children killed, order completed {time.monotonic() - started:.1f}s later"
    )
    assert stack.processes["worker"].alive()


def test_redis_restart_loses_no_accepted_order(services: ServiceLauncher, aof_redis: RedisServer) -> None:
    env = {
        "WORKER_CONCURRENCY": "1",
        "WORKER_SIMULATED_WORK_SECONDS": "0.1",
        "CELERY_VISIBILITY_TIMEOUT": "5",
        "RECONCILE_AFTER_SECONDS": "15",
        "RECONCILE_INTERVAL_SECONDS": "2",
    }
    stack = stack_on(services, aof_redis).start(**env)
    order_ids = [stack.post_order() for _ in range(30)]
    aof_redis.stop()  # SIGTERM while most of the work is still queued
    refused = [http_request("POST", f"{stack.api}/orders", sample_order()).status for _ in range(3)]
    assert refused == [503, 503, 503]
    time.sleep(2)
    aof_redis.start()
    started = time.monotonic()

    order_ids.append(stack.post_order())  # the API reconnects by itself
    stack.audit(order_ids, timeout=120)
    assert all(process.alive() for process in stack.processes.values()), "no service needed a restart"
    report_figure(
        f"Redis restart (AOF): {len(order_ids)} orders accepted, all completed and notified once, "
        f"{time.monotonic() - started:.1f}s after Redis came back; 3 posts during the outage got 503"
    )


def test_an_order_whose_message_could_not_be_published_is_accepted_and_done(
    services: ServiceLauncher, redis_server: RedisServer, aof_redis: RedisServer
) -> None:
    """The order store and the broker on two Redis servers; the broker away when an order arrives: the
    order is stored with its lease, answered 202, and done once the broker is back."""
    lease = 3
    env = {"ORDER_STORE_URL": redis_server.url(2), "RECONCILE_AFTER_SECONDS": str(lease)}
    stack = stack_on(services, aof_redis).start(**env, RECONCILE_INTERVAL_SECONDS="1")
    aof_redis.stop()
    response = http_request("POST", f"{stack.api}/orders", sample_order())
    assert response.status == 202, response.body
    order_id = str(response.json()["order_id"])
    assert "its message left to its lease" in stack.processes["order-service"].log()
    aof_redis.start()
    back = time.monotonic()
    stack.audit([order_id], timeout=lease + 60)
    report_figure(
        f"publish failed, order stored: answered 202, completed and notified {time.monotonic() - back:.1f}s "
        f"after the broker returned (lease {lease}s)"
    )


def test_transient_channel_failures_still_notify_once(services: ServiceLauncher, redis_server: RedisServer) -> None:
    channel = {
        "NOTIFICATION_CHANNEL": "scripted_channels:FlakyChannel",
        "SCRIPTED_CHANNEL_REDIS_URL": redis_server.url(3),
        "SCRIPTED_CHANNEL_FAILURES": "2",
        "PYTHONPATH": SCRIPTED_CHANNELS,
    }
    stack = Stack(services, redis_server).start(**channel)
    order_ids = [stack.post_order() for _ in range(5)]
    stack.audit(order_ids)
    log = stack.processes["notification-service"].log()
    assert log.count("retry 1 in") == log.count("retry 2 in") == 5 and "retry 3 in" not in log


def test_permanent_channel_failure_marks_the_notification_failed(
    services: ServiceLauncher, redis_server: RedisServer
) -> None:
    channel = {
        "NOTIFICATION_CHANNEL": "scripted_channels:BrokenChannel",
        "SCRIPTED_CHANNEL_REDIS_URL": redis_server.url(3),
        "PYTHONPATH": SCRIPTED_CHANNELS,
    }
    stack = Stack(services, redis_server).start(**channel)
    order_id = stack.post_order()
    [view] = stack.wait_finished([order_id])
    assert (view["status"], view["notification"], view["notifications_sent"]) == ("completed", "failed", 0)
    time.sleep(1)  # would a retry loop log again?
    assert stack.processes["notification-service"].log().count("failed permanently") == 1


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def hostile_messages(redis_server: RedisServer, order_id: str, marker: Path) -> list[tuple[str, str, str]]:
    """(queue, raw message, log line it must produce once), built from a real message then mutated."""
    app = redis_server.celery_app("hostile")
    client = redis_server.client()
    message = ProcessOrder(order_id=order_id, customer_email="a@example.com", items=sample_order()["items"])
    send_process_order(app, message)
    template = json.loads(client.rpop(ORDERS_QUEUE))

    def variant(body: bytes, task: str | None = None, content_type: str = "application/json") -> str:
        copy = json.loads(json.dumps(template))
        copy["body"] = base64.b64encode(body).decode()
        copy["content-type"] = content_type
        if task:
            copy["headers"]["task"] = task
        return json.dumps(copy)

    def call(payload: object) -> bytes:
        return json.dumps([[], {"payload": payload}, {}]).encode()

    wire = message.model_dump(mode="json")
    pickled = pickle.dumps(((), {"payload": _RunsCodeWhenUnpickled(marker)}, {}))
    return [
        (ORDERS_QUEUE, variant(call({**wire, "items": "none"})), "orders.process payload rejected: items"),
        (ORDERS_QUEUE, variant(call({**wire, "contract_version": 99})), "payload rejected: contract_version"),
        (ORDERS_QUEUE, variant(call(wire), task="orders.drop_tables"), "unknown task 'orders.drop_tables'"),
        (ORDERS_QUEUE, variant(pickled, content_type="application/x-python-serialize"),
         "Refusing to deserialize untrusted content of type pickle"),
        (ORDERS_QUEUE, variant(call(wire)[:25]), "cannot decode a application/json body"),
        (NOTIFICATIONS_QUEUE, variant(call({"order_id": order_id}), task="notifications.send_order_confirmation"),
         "notifications.send_order_confirmation payload rejected"),
        (NOTIFICATIONS_QUEUE, variant(json.dumps([["positional"], {}, {}]).encode(),
                                      task="notifications.send_order_confirmation"), "exactly one keyword argument"),
    ]  # fmt: skip


def test_hostile_queue_messages_are_rejected_once_and_work_goes_on(
    services: ServiceLauncher, redis_server: RedisServer, tmp_path: Path
) -> None:
    marker = tmp_path / "pickle-ran"
    order_id = "9" * 32
    messages = hostile_messages(redis_server, order_id, marker)
    client = redis_server.client()
    for queue, raw, _ in messages:
        client.lpush(queue, raw)

    stack = Stack(services, redis_server).start()
    order_ids = [stack.post_order() for _ in range(3)]  # valid work behind the hostile messages
    stack.audit(order_ids)
    time.sleep(1.5)
    logs = worker_logs(stack) + stack.processes["notification-service"].log()
    for _, _, expected in messages:
        assert logs.count(expected) == 1, f"expected exactly one {expected!r} in the logs"
    assert "Traceback" not in logs
    assert not marker.exists(), "a pickle payload was deserialized"
    assert client.llen(ORDERS_QUEUE) == 0 and client.llen(NOTIFICATIONS_QUEUE) == 0
    assert client.hlen("unacked") == 0, "a rejected message is waiting for redelivery"
    assert OrderStore(client).get(order_id) is None
    report_figure(
        f"hostile queue messages: {len(messages)} rejected with one log line each, {len(order_ids)} valid orders done"
    )


def test_warm_shutdown_fits_the_compose_grace_period(services: ServiceLauncher, redis_server: RedisServer) -> None:
    grace = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker"]["stop_grace_period"]
    grace_seconds = int(str(grace).rstrip("s"))
    stack = Stack(services, redis_server).start(WORKER_SIMULATED_WORK_SECONDS="3")
    order_id = stack.post_order()
    wait_until(lambda: stack.order(order_id)["status"] == "processing", 15, "the order never started")
    started = time.monotonic()
    assert stack.processes["worker"].terminate(timeout=grace_seconds) == 0
    took = time.monotonic() - started
    assert stack.order(order_id)["status"] == "completed"
    assert redis_server.client().hlen("unacked") == 0, "the task was acknowledged before exit"
    services.start("worker")
    stack.audit([order_id])
    report_figure(f"warm shutdown with a 3 s task running: {took:.1f}s (compose grace period {grace_seconds}s)")


def test_redis_password_in_the_url(services: ServiceLauncher, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis-auth", password="test-only-not-a-secret").start()
    try:
        stack = stack_on(services, server).start()
        stack.audit([stack.post_order()])
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
    finally:
        services.stop_all()
        server.stop()


def test_redis_restart_with_tasks_running_lets_them_finish(services: ServiceLauncher, aof_redis: RedisServer) -> None:
    # The reconciler and Redis's visibility timeout are both an hour away: the running tasks finish
    # through Celery's own handling of the connection loss, and the queued ones wait in Redis.
    env = {"WORKER_SIMULATED_WORK_SECONDS": "2", "RECONCILE_AFTER_SECONDS": "3600"}
    stack = stack_on(services, aof_redis).start(**env)
    order_ids = [stack.post_order() for _ in range(6)]
    wait_until(lambda: sum(stack.order(o)["status"] == "processing" for o in order_ids) == 2, 15, "no task started")
    aof_redis.stop()
    time.sleep(1)
    aof_redis.start()
    back = time.monotonic()
    stack.audit(order_ids, timeout=45)
    took = time.monotonic() - back
    assert all(process.alive() for process in stack.processes.values()), "a service exited"
    logs = worker_logs(stack)
    assert "Traceback" not in logs, logs[-3000:]
    # The running tasks were not stopped: they finished, once each (one outcome line per order).
    assert "broker connection lost; reconnecting" in logs, logs[-3000:]
    for order_id in order_ids:
        assert logs.count(f"order {order_id} completed") == 1, logs[-3000:]
    report_figure(
        f"Redis restart with 2 tasks running and 4 queued: all {len(order_ids)} orders completed and notified "
        f"once {took:.1f}s after Redis came back"
    )


def test_warm_stop_while_redis_is_away_is_a_clean_stop(services: ServiceLauncher, aof_redis: RedisServer) -> None:
    """SIGTERM to a worker that is reconnecting, with a task's message in hand: kombu raises on the
    way out (it cannot hand the message back); the worker still stops as asked, with status 0, and
    the order is finished by the next worker."""
    env = {"WORKER_SIMULATED_WORK_SECONDS": "2", "RECONCILE_AFTER_SECONDS": "3", "RECONCILE_INTERVAL_SECONDS": "1"}
    stack = stack_on(services, aof_redis).start(**env)
    order_id = stack.post_order()
    wait_until(lambda: stack.order(order_id)["status"] == "processing", 15, "the order never started")
    aof_redis.stop()
    time.sleep(3)  # the task has ended; the worker is reconnecting
    started = time.monotonic()
    assert stack.processes["worker"].terminate(timeout=60) == 0
    took = time.monotonic() - started
    assert "stopped as asked" in worker_logs(stack) or "Warm shutdown" in worker_logs(stack)
    aof_redis.start()
    stack.launcher.start("worker", **env)
    stack.audit([order_id], timeout=60)
    report_figure(f"warm stop while Redis was away: exit 0 after {took:.1f}s; the order finished by the next worker")


def test_broker_outage_of_a_minute_under_load(services: ServiceLauncher, aof_redis: RedisServer) -> None:
    outage = float(os.environ.get("OUTAGE_SECONDS", "60"))
    stack = stack_on(services, aof_redis).start(WORKER_SIMULATED_WORK_SECONDS="0.05")
    with OrderLoad(stack.api, rate=10) as load:
        time.sleep(3)
        aof_redis.stop()
        deadline = time.monotonic() + outage
        while time.monotonic() < deadline:
            dead = [name for name, process in stack.processes.items() if not process.alive()]
            assert not dead, f"{dead} exited during the outage"
            time.sleep(1)
        aof_redis.start()
        back = time.monotonic()
        time.sleep(3)
    stack.audit(load.accepted, timeout=90)
    assert all(process.alive() for process in stack.processes.values()), "a service exited"
    assert load.unexpected() == {}, load.statuses
    assert load.statuses[503] > 0
    report_figure(
        f"Redis down {outage:.0f}s under load: no service exited, {load.statuses[503]} posts got 503, all "
        f"{len(load.accepted)} accepted orders completed and notified once {time.monotonic() - back:.1f}s after"
    )
