"""The `worker` console script against a real Redis: processing, idempotency, shutdown, reconciler."""

from __future__ import annotations

import json
import subprocess
import time

import redis

from common_tasks.schemas import OrderRequest, ProcessOrder
from common_tasks.tasks import NOTIFICATIONS_QUEUE, SEND_ORDER_CONFIRMATION, send_process_order
from order_store.store import OrderRecord, OrderStore
from stack_testkit import RedisServer, ServiceLauncher, console_script, report_figure, wait_until

REQUEST = OrderRequest.model_validate(
    {"customer_email": "a@example.com", "items": [{"sku": "A", "quantity": 3, "unit_price": "0.10"}]}
)


def place(store: OrderStore, order_id: str) -> ProcessOrder:
    store.create(order_id, REQUEST)
    return ProcessOrder(order_id=order_id, customer_email=REQUEST.customer_email, items=REQUEST.items)


def completed(store: OrderStore, order_id: str) -> OrderRecord | None:
    record = store.get(order_id)
    return record if record is not None and record.status == "completed" else None


def confirmations_queued(client: redis.Redis) -> list[dict[str, object]]:
    messages = [json.loads(raw) for raw in client.lrange(NOTIFICATIONS_QUEUE, 0, -1)]
    assert all(message["headers"]["task"] == SEND_ORDER_CONFIRMATION.name for message in messages)
    return messages


def test_order_is_processed_and_confirmation_dispatched(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    store = OrderStore(redis_server.client())
    worker = services.start("worker")
    send_process_order(redis_server.celery_app(), place(store, "a" * 32))

    record = wait_until(lambda: completed(store, "a" * 32), 15, "order never completed")
    assert record.total == "0.30"
    assert record.worker is not None and record.worker.startswith("worker.")
    wait_until(lambda: len(confirmations_queued(redis_client)) == 1, 10, "no confirmation dispatched")
    assert f"order {'a' * 32} completed: total 0.30" in worker.log()


def test_redelivered_order_is_counted_once(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    store = OrderStore(redis_server.client())
    app = redis_server.celery_app()
    message = place(store, "b" * 32)
    send_process_order(app, message)
    send_process_order(app, message)  # the same order delivered twice
    worker = services.start("worker")

    # One outcome line per delivery: "order <id> completed: ..." and "order <id> already ...".
    wait_until(lambda: worker.log().count(f"order {'b' * 32} ") >= 2, 15, "both deliveries not handled")
    record = completed(store, "b" * 32)
    assert record is not None and record.total == "0.30"
    assert worker.log().count(f"order {'b' * 32} completed") == 1


def test_unknown_order_is_dropped_without_side_effects(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    worker = services.start("worker")
    message = ProcessOrder(order_id="c" * 32, customer_email="a@example.com", items=REQUEST.items)
    send_process_order(redis_server.celery_app(), message)
    worker.wait_for_log("no such order in the store, message dropped")
    assert redis_client.exists(f"order:{'c' * 32}") == 0
    assert confirmations_queued(redis_client) == []


def test_warm_shutdown_finishes_the_running_task(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    store = OrderStore(redis_server.client())
    worker = services.start("worker", WORKER_SIMULATED_WORK_SECONDS="2")
    send_process_order(redis_server.celery_app(), place(store, "d" * 32))
    wait_until(lambda: getattr(store.get("d" * 32), "status", None) == "processing", 15, "the task never started")
    time.sleep(0.3)
    started = time.monotonic()
    assert worker.terminate(timeout=30) == 0
    report_figure(f"worker warm shutdown took {time.monotonic() - started:.2f}s with a 2 s task running")
    assert completed(store, "d" * 32) is not None
    assert redis_client.llen("orders") == 0  # acknowledged, not requeued


def test_reconciler_finishes_an_order_whose_message_was_lost(
    services: ServiceLauncher, redis_server: RedisServer
) -> None:
    store = OrderStore(redis_server.client())
    place(store, "e" * 32)  # recorded as accepted, but its message never reached the queue
    worker = services.start("worker", RECONCILE_AFTER_SECONDS="1", RECONCILE_INTERVAL_SECONDS="0.5")
    wait_until(lambda: completed(store, "e" * 32), 20, "reconciler never finished the order")
    assert f"reconciler: re-dispatched order {'e' * 32} (status accepted" in worker.log()


def test_a_backlog_that_outlasts_the_lease_is_done_once(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    store = OrderStore(redis_server.client())
    app = redis_server.celery_app()
    order_ids = [f"{index:032x}" for index in range(8)]
    for order_id in order_ids:
        send_process_order(app, place(store, order_id))
    # One slow task at a time: the backlog waits far longer than the reconciler's delay.
    worker = services.start(
        "worker",
        WORKER_CONCURRENCY="1",
        WORKER_SIMULATED_WORK_SECONDS="0.5",
        RECONCILE_AFTER_SECONDS="0.5",
        RECONCILE_INTERVAL_SECONDS="0.2",
    )
    wait_until(lambda: all(completed(store, o) for o in order_ids), 30, "the backlog never drained")
    # The reconciler does not read the queues: orders queued longer than the lease are sent again,
    # and each second copy finds its order completed (no second completion). With no
    # notification-service running here, the confirmations' leases expire too and are sent again.
    assert "re-dispatched" in worker.log()
    # The second copies were queued behind the whole backlog: the worker takes them after it.
    wait_until(lambda: "already completed" in worker.log(), 10, "no second copy was taken")
    assert sum(worker.log().count(f"order {o} completed") for o in order_ids) == len(order_ids)
    queued = {message["headers"]["order_id"] for message in confirmations_queued(redis_client)}
    assert queued == set(order_ids)


def test_healthcheck_follows_the_heartbeat(services: ServiceLauncher, tmp_path) -> None:
    heartbeat = str(tmp_path / "hb")
    worker = services.start("worker", WORKER_HEARTBEAT_FILE=heartbeat)
    env = services.environment(WORKER_HEARTBEAT_FILE=heartbeat)
    probe = subprocess.run([console_script("worker"), "healthcheck"], env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stdout
    worker.terminate()
    probe = subprocess.run([console_script("worker"), "healthcheck"], env=env, capture_output=True, text=True)
    assert probe.returncode == 1
    assert probe.stdout.startswith("unhealthy")


def test_bad_configuration_fails_fast_with_one_line(services: ServiceLauncher) -> None:
    env = services.environment(CELERY_VISIBILITY_TIMEOUT="forever")
    result = subprocess.run([console_script("worker")], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "CELERY_VISIBILITY_TIMEOUT" in result.stderr


def test_an_order_that_never_finishes_is_failed_after_its_attempts(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """A poison message (one that kills whatever runs it) is not tried forever: the attempts that
    started it are counted on the order, and past ORDER_MAX_ATTEMPTS the order is failed."""
    store = OrderStore(redis_server.client())
    message = place(store, "f" * 32)
    redis_client.hset(f"order:{'f' * 32}", "attempts", 3)  # three attempts that died
    worker = services.start("worker", ORDER_MAX_ATTEMPTS="3")
    send_process_order(redis_server.celery_app(), message)
    worker.wait_for_log(f"order {'f' * 32} failed: gave up after 3 attempts that never finished")
    record = store.get("f" * 32)
    assert record is not None and (record.status, record.notification) == ("failed", "failed")
    assert confirmations_queued(redis_client) == []


def test_a_worker_that_stops_making_progress_while_redis_answers_exits(services: ServiceLauncher, tmp_path) -> None:
    """The stall watchdog: a heartbeat that does not move (here: touched once, at start) ends the
    worker with status 1 once Redis has answered for WORKER_STALL_SECONDS; while Redis is away it
    waits."""
    server = RedisServer(tmp_path / "redis-stall").start()
    try:
        env = {"WORKER_HEARTBEAT_INTERVAL": "3600", "WORKER_STALL_SECONDS": "10"}
        worker = services.on(server).start("worker", **env)
        server.stop()
        time.sleep(15)
        assert worker.alive(), "the watchdog ended a worker waiting for Redis"
        server.start()
        back = time.monotonic()
        assert worker.process.wait(timeout=40) == 1
        report_figure(f"stall watchdog: a stuck worker exited {time.monotonic() - back:.1f}s after Redis answered")
        assert "no progress for" in worker.log() and "exiting to be restarted" in worker.log()
    finally:
        services.stop_all()
        server.stop()


def test_the_stall_watchdog_lets_a_warm_stop_finish_a_long_task(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """A warm stop removes the heartbeat file and waits for the running task: longer than
    WORKER_STALL_SECONDS here, and still a clean stop."""
    store = OrderStore(redis_server.client())
    worker = services.start("worker", WORKER_STALL_SECONDS="10", WORKER_SIMULATED_WORK_SECONDS="16")
    time.sleep(11)  # past the stall limit since the worker started
    send_process_order(redis_server.celery_app(), place(store, "9" * 32))
    wait_until(lambda: getattr(store.get("9" * 32), "status", None) == "processing", 15, "the task never started")
    assert worker.terminate(timeout=40) == 0
    assert completed(store, "9" * 32) is not None
    assert "exiting to be restarted" not in worker.log()
