"""Flower, Celery's monitor, against the running stack: a real `celery flower` process (the command
the flower image runs) sees both services' workers with their queues, one order's three tasks
succeed, its Prometheus metrics count them, and its API answers only with the basic-auth password."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from full_stack import Stack
from stack_testkit import HttpResponse, ServiceLauncher, ServiceProcess, free_port, http_request, wait_until

CREDENTIALS = "admin:flower-test-password"
AUTH = {"Authorization": "Basic " + base64.b64encode(CREDENTIALS.encode()).decode()}
# One order's tasks, in the order they run, and the queue of the service that runs each.
ORDER_TASKS = {
    "orders.process": "orders",
    "notifications.send_order_confirmation": "notifications",
    "orders.record_notification": "orders",
}


def start_flower(launcher: ServiceLauncher, basic_auth: str) -> tuple[ServiceProcess, str]:
    """`celery flower` as the image runs it (not persistent; broker from CELERY_BROKER_URL), on
    loopback; returns it once /healthcheck answers, and its base URL."""
    port = free_port()
    flower = launcher.start(
        "celery",
        "flower",
        "--address=127.0.0.1",
        f"--port={port}",
        "--persistent=False",
        ready=False,
        FLOWER_BASIC_AUTH=basic_auth,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not flower.alive():
            raise AssertionError(f"flower exited:\n{flower.log()[-3000:]}")
        return http_request("GET", f"{url}/healthcheck", timeout=2).body == b"OK"

    wait_until(healthy, 60, f"flower never answered:\n{flower.log()[-3000:]}", interval=0.2)
    return flower, url


def get(url: str, auth: dict[str, str] | None = AUTH) -> HttpResponse:
    return http_request("GET", url, headers=auth, timeout=30)


@pytest.fixture
def flower(stack: Stack) -> str:
    return start_flower(stack.launcher, CREDENTIALS)[1]


def test_flower_lists_both_services_and_one_orders_tasks(stack: Stack, flower: str) -> None:
    # Both Celery services' workers, with the queue each consumes (Flower asks them: inspect).
    def workers() -> dict[str, set[str]]:
        response = get(f"{flower}/api/workers?refresh=1")
        assert response.status == 200, response.body
        found = {name: {q["name"] for q in info.get("active_queues") or []} for name, info in response.json().items()}
        return found if sorted(set().union(*found.values())) == ["notifications", "orders"] else {}

    queues = wait_until(workers, 60, "flower never listed the orders and notifications workers", 0.5)
    assert sorted(sorted(names) for names in queues.values()) == [["notifications"], ["orders"]]

    # One order: its three tasks, each SUCCESS, each on the worker of its queue (from the events).
    order_id = stack.post_order()
    stack.audit([order_id])

    def order_tasks() -> dict[str, dict[str, Any]]:
        response = get(f"{flower}/api/tasks")
        assert response.status == 200, response.body
        tasks = {
            task["name"]: task
            for task in response.json().values()
            if order_id in f"{task.get('args')}{task.get('kwargs')}" and task.get("state") == "SUCCESS"
        }
        return tasks if set(tasks) == set(ORDER_TASKS) else {}

    tasks = wait_until(order_tasks, 30, f"flower never showed the three tasks of {order_id} succeeded", 0.5)
    for name, queue in ORDER_TASKS.items():
        assert queue in queues[tasks[name]["worker"]], (name, tasks[name]["worker"])

    # Prometheus: Flower counts the events per task and type (its /metrics needs no credentials).
    def succeeded() -> dict[str, float]:
        metrics = get(f"{flower}/metrics", auth=None)
        assert metrics.status == 200
        counts = {
            match["task"]: float(match["value"])
            for match in re.finditer(
                r'^flower_events_total\{task="(?P<task>[^"]+)",type="task-succeeded",worker="[^"]+"\} (?P<value>\S+)$',
                metrics.body.decode(),
                re.MULTILINE,
            )
        }
        return counts if set(ORDER_TASKS) <= set(counts) else {}

    counts = wait_until(succeeded, 30, "flower's /metrics never counted the order's tasks", 0.5)
    assert all(counts[name] >= 1 for name in ORDER_TASKS), counts

    # The dashboard and the API answer only with the password.
    wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()}
    for auth in (None, wrong):
        assert get(f"{flower}/api/workers", auth=auth).status == 401
        assert get(f"{flower}/workers", auth=auth).status == 401


def test_flower_with_an_empty_password_refuses_everyone(services: ServiceLauncher) -> None:
    """What compose's `${FLOWER_BASIC_AUTH:-}` gives when .env leaves it empty: closed, not open."""
    _, url = start_flower(services, "")
    assert get(f"{url}/api/workers", auth=None).status == 401
    assert get(f"{url}/workers", auth=None).status == 401
    assert get(f"{url}/api/workers").status == 401
