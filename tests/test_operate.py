"""Operating the stack with the ecosystem's own tools: `celery -A <module>` against the running
services, and logs that tie one order's lines together across services (text and JSON)."""

from __future__ import annotations

import json
import subprocess

import pytest

from full_stack import Stack, sample_order
from stack_testkit import RedisServer, ServiceLauncher, console_script, http_request, wait_until

# The module `celery -A` takes for each Celery service, and the queue its workers consume.
CELERY_MODULES = {"worker": "orders", "notification_service": "notifications"}
# Each service's console script passes `celery ARGS` on to `celery -A <its module> ARGS`.
SCRIPTS = {"worker": "worker", "notification_service": "notification-service"}
# The lines one order leaves, per service: one per task (worker: orders.process and
# orders.record_notification; notification-service: its confirmation) and the API's acceptance.
LINES_PER_ORDER = {"order-service": 1, "worker": 2, "notification-service": 1}


def is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def celery(stack: Stack, module: str, *arguments: str, via_script: bool = False) -> subprocess.CompletedProcess[str]:
    environment = stack.launcher.environment()
    command = [console_script(SCRIPTS[module]), "celery"] if via_script else [console_script("celery"), "-A", module]
    return subprocess.run(
        [*command, *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("module", sorted(CELERY_MODULES))
def test_celery_command_line_reaches_the_running_services(stack: Stack, module: str) -> None:
    ping = celery(stack, module, "inspect", "ping", "--timeout", "5")
    assert ping.returncode == 0, ping.stderr
    # Both services' workers answer, whichever app asks: they share the broker.
    assert ping.stdout.count("pong") == 2, ping.stdout
    queues = celery(stack, module, "inspect", "active_queues", "--timeout", "5", "--json")
    assert queues.returncode == 0, queues.stderr
    consumed = {queue["name"] for node in json.loads(queues.stdout).values() for queue in node}
    assert consumed == set(CELERY_MODULES.values())
    registered = celery(stack, module, "inspect", "registered", "--timeout", "5", "--json")
    names = {name for node in json.loads(registered.stdout).values() for name in node}
    assert {"orders.process", "orders.record_notification", "notifications.send_order_confirmation"} <= names
    # The same through the service's own console script (what the images have).
    ping = celery(stack, module, "inspect", "ping", "--timeout", "5", via_script=True)
    assert ping.returncode == 0, ping.stderr
    assert ping.stdout.count("pong") == 2, ping.stdout
    unknown = celery(stack, module, "no-such-command", via_script=True)
    assert unknown.returncode == 2 and "No such command" in unknown.stderr and "Traceback" not in unknown.stderr


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_one_order_greps_across_every_service(
    services: ServiceLauncher, redis_server: RedisServer, log_format: str
) -> None:
    stack = Stack(services, redis_server).start(LOG_FORMAT=log_format)
    response = http_request("POST", f"{stack.api}/orders", sample_order(), headers={"X-Request-ID": "req-42.a"})
    assert response.status == 202, response.body
    assert response.headers["X-Request-ID"] == "req-42.a"
    order_id = str(response.json()["order_id"])
    stack.audit([order_id])
    generated = http_request("GET", f"{stack.api}/healthz", headers={"X-Request-ID": "not a token!"})
    assert len(generated.headers["X-Request-ID"]) == 32  # an unusable id is replaced, not echoed

    for service, expected in LINES_PER_ORDER.items():
        # A task retried after a transient Redis error (this machine may be loaded) adds Celery's
        # retry line; the outcome lines are what is counted.
        def outcome_lines(service: str = service) -> list[str]:
            log = stack.processes[service].log()
            return [line for line in log.splitlines() if order_id in line and " retry: " not in line]

        # The order is finished once the worker recorded the notification, which may be a moment
        # before notification-service wrote its own line (after it sent the report).
        wait_until(lambda n=expected: len(outcome_lines()) >= n, 10, f"{service} never logged the order")
        order_lines = outcome_lines()
        assert len(order_lines) == expected, f"{service}:\n" + "\n".join(order_lines)
        log = stack.processes[service].log()
        if log_format == "json":
            not_json = [line for line in log.splitlines() if line.strip() and not is_json_object(line)]
            assert not not_json, f"{service} wrote lines that are not JSON objects: {not_json[:5]}"
            records = [json.loads(line) for line in log.splitlines() if line.strip()]
            mine = [r for r in records if r.get("order_id") == order_id and " retry: " not in r["message"]]
            assert len(mine) == expected, mine
            for record in mine:
                assert record["service"] == service
                assert record["request_id"] == "req-42.a"
                assert {"time", "level", "logger", "message"} <= set(record)
                if service != "order-service":
                    assert record["task_name"] and record["task_id"]
        else:
            for line in order_lines:
                assert f" {service} " in line and "request_id=req-42.a" in line, line
