"""The `notification-service` console script against a real Redis."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import redis

from common_tasks.schemas import OrderRequest, SendOrderConfirmation
from common_tasks.store import OrderStore
from common_tasks.tasks import RECORD_NOTIFICATION, send_order_confirmation
from common_tasks.testing import RedisServer, ServiceLauncher, console_script, wait_until

TESTS_DIR = str(Path(__file__).parent)
REQUEST = OrderRequest.model_validate(
    {"customer_email": "buyer@example.com", "items": [{"sku": "A", "quantity": 1, "unit_price": "5.00"}]}
)


def completed_order(store: OrderStore, order_id: str) -> SendOrderConfirmation:
    store.create(order_id, REQUEST)
    store.complete(order_id, "5.00", "test")
    return SendOrderConfirmation(order_id=order_id, customer_email=REQUEST.customer_email, total="5.00")


def outcomes(client: redis.Redis) -> list[dict[str, object]]:
    """The record_notification payloads the service sent back to the orders queue."""
    found = []
    for raw in client.lrange("orders", 0, -1):
        message = json.loads(raw)
        assert message["headers"]["task"] == RECORD_NOTIFICATION.name
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        found.append(kwargs["payload"])
    return found


def scripted(services: ServiceLauncher, redis_server: RedisServer, channel: str, failures: int = 0) -> dict[str, str]:
    return {
        "NOTIFICATION_CHANNEL": f"scripted_channels:{channel}",
        "SCRIPTED_CHANNEL_REDIS_URL": redis_server.url(3),
        "SCRIPTED_CHANNEL_FAILURES": str(failures),
        "PYTHONPATH": TESTS_DIR,
    }


def test_confirmation_is_delivered_once_even_when_redelivered(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    store = OrderStore(redis_server.client())
    confirmation = completed_order(store, "1" * 32)
    app = redis_server.celery_app()
    send_order_confirmation(app, confirmation)
    send_order_confirmation(app, confirmation)
    service = services.start("notification-service")

    wait_until(lambda: len(outcomes(redis_client)) == 2, 30, "outcomes not reported")
    assert [o["outcome"] for o in outcomes(redis_client)] == ["sent", "sent"]
    record = store.get("1" * 32)
    assert record is not None and record.notifications_sent == 1
    assert service.log().count(f"confirmation for order {'1' * 32} delivered to b***@example.com") == 1


def test_transient_failures_are_retried_with_backoff(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    store = OrderStore(redis_server.client())
    send_order_confirmation(redis_server.celery_app(), completed_order(store, "2" * 32))
    service = services.start("notification-service", **scripted(services, redis_server, "FlakyChannel", failures=3))

    wait_until(lambda: outcomes(redis_client), 30, "no outcome reported")
    assert outcomes(redis_client)[0]["outcome"] == "sent"
    assert service.log().count("confirmation will be retried") == 3
    assert redis_server.client(3).get(f"scripted-channel:attempts:{'2' * 32}") == "4"
    record = store.get("2" * 32)
    assert record is not None and record.notifications_sent == 1


def test_retries_are_bounded(services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis) -> None:
    store = OrderStore(redis_server.client())
    send_order_confirmation(redis_server.celery_app(), completed_order(store, "3" * 32))
    env = scripted(services, redis_server, "FlakyChannel", failures=100)
    service = services.start("notification-service", NOTIFICATION_MAX_RETRIES="2", **env)

    wait_until(lambda: outcomes(redis_client), 30, "no outcome reported")
    assert outcomes(redis_client)[0]["outcome"] == "failed"
    assert service.log().count("confirmation failed after 2 retries") == 1
    assert redis_server.client(3).get(f"scripted-channel:attempts:{'3' * 32}") == "3"


def test_permanent_failure_is_reported_once_and_not_retried(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    store = OrderStore(redis_server.client())
    send_order_confirmation(redis_server.celery_app(), completed_order(store, "4" * 32))
    service = services.start("notification-service", **scripted(services, redis_server, "BrokenChannel"))

    wait_until(lambda: outcomes(redis_client), 15, "no outcome reported")
    [outcome] = outcomes(redis_client)
    assert outcome["outcome"] == "failed" and "mailbox does not exist" in outcome["detail"]
    assert service.log().count("confirmation failed permanently") == 1
    assert redis_server.client(3).get(f"scripted-channel:attempts:{'4' * 32}") == "1"
    record = store.get("4" * 32)
    assert record is not None and record.notifications_sent == 0


def test_unloadable_channel_fails_fast(services: ServiceLauncher) -> None:
    env = services.environment(NOTIFICATION_CHANNEL="no_such_module:Channel")
    result = subprocess.run([console_script("notification-service")], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "NOTIFICATION_CHANNEL" in result.stderr and result.stderr.strip().count("\n") == 0
