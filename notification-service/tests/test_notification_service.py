"""The `notification-service` console script against a real Redis."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import redis

from common_tasks.schemas import SendOrderConfirmation
from common_tasks.tasks import RECORD_NOTIFICATION, SEND_ORDER_CONFIRMATION, send_order_confirmation
from notification_service.ledger import DeliveryLedger, claim_key
from stack_testkit import RedisServer, ServiceLauncher, console_script, wait_until

TESTS_DIR = str(Path(__file__).parent)


def confirmation(order_id: str) -> SendOrderConfirmation:
    return SendOrderConfirmation(order_id=order_id, customer_email="buyer@example.com", total="5.00")


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
        "NOTIFICATION_RETRY_BACKOFF_SECONDS": "0.2",
    }


def test_confirmation_is_delivered_once_even_when_redelivered(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    app = redis_server.celery_app()
    send_order_confirmation(app, confirmation("1" * 32))
    send_order_confirmation(app, confirmation("1" * 32))
    service = services.start("notification-service")

    # Each copy's one outcome line.
    task_lines = "task=notifications.send_order_confirmation "
    wait_until(lambda: service.log().count(task_lines) == 2, 30, "both copies not handled")
    # The second copy either ran after the first (it reports the delivery again) or while the first
    # was delivering (it is dropped as a duplicate); never a second delivery.
    reports = [(o["outcome"], o["deliveries"]) for o in outcomes(redis_client)]
    assert reports in ([("sent", 1)], [("sent", 1), ("sent", 1)]), reports
    assert DeliveryLedger(redis_server.client()).delivered("1" * 32) == 1
    assert service.log().count(f"confirmation for order {'1' * 32} delivered to b***@example.com") == 1


def test_second_copy_of_a_message_waits_for_the_claim_of_the_first(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """A copy of a message (not redelivered) finds another attempt of its own task id holding the
    claim, as after a failover that left the message on the new master: it waits for the claim to
    end, then delivers once (the holder died without delivering here)."""
    order_id, task_id = "5" * 32, "a-task-id"
    service = services.start("notification-service", **scripted(services, redis_server, "FlakyChannel"))
    redis_client.set(claim_key(order_id), f"{task_id} an-earlier-attempt", ex=2)
    payload = confirmation(order_id).model_dump(mode="json")
    redis_server.celery_app().send_task(
        SEND_ORDER_CONFIRMATION.name, kwargs={"payload": payload}, queue=SEND_ORDER_CONFIRMATION.queue, task_id=task_id
    )

    wait_until(lambda: outcomes(redis_client), 30, "no outcome reported")
    assert [(o["outcome"], o["deliveries"]) for o in outcomes(redis_client)] == [("sent", 1)]
    assert service.log().count(f"another attempt of this task holds the claim on order {order_id}") == 1
    assert redis_server.client(3).get(f"scripted-channel:attempts:{order_id}") == "1"


def test_transient_failures_are_retried_with_backoff(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    send_order_confirmation(redis_server.celery_app(), confirmation("2" * 32))
    service = services.start("notification-service", **scripted(services, redis_server, "FlakyChannel", failures=3))

    wait_until(lambda: outcomes(redis_client), 30, "no outcome reported")
    assert outcomes(redis_client)[0]["outcome"] == "sent"
    assert service.log().count("retry: Retry in") == 3
    assert redis_server.client(3).get(f"scripted-channel:attempts:{'2' * 32}") == "4"
    assert outcomes(redis_client)[0]["deliveries"] == 1


def test_retries_are_bounded(services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis) -> None:
    send_order_confirmation(redis_server.celery_app(), confirmation("3" * 32))
    env = scripted(services, redis_server, "FlakyChannel", failures=100)
    service = services.start("notification-service", NOTIFICATION_MAX_RETRIES="2", **env)

    wait_until(lambda: outcomes(redis_client), 30, "no outcome reported")
    assert outcomes(redis_client)[0]["outcome"] == "failed"
    assert service.log().count("confirmation failed after 2 retries") == 1
    assert redis_server.client(3).get(f"scripted-channel:attempts:{'3' * 32}") == "3"


def test_permanent_failure_is_reported_once_and_not_retried(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    send_order_confirmation(redis_server.celery_app(), confirmation("4" * 32))
    service = services.start("notification-service", **scripted(services, redis_server, "BrokenChannel"))

    wait_until(lambda: outcomes(redis_client), 15, "no outcome reported")
    [outcome] = outcomes(redis_client)
    assert outcome["outcome"] == "failed" and "mailbox does not exist" in outcome["detail"]
    assert service.log().count("confirmation failed permanently") == 1
    assert redis_server.client(3).get(f"scripted-channel:attempts:{'4' * 32}") == "1"
    assert outcome["deliveries"] == 0


def test_unloadable_channel_fails_fast(services: ServiceLauncher) -> None:
    env = services.environment(NOTIFICATION_CHANNEL="no_such_module:Channel")
    result = subprocess.run([console_script("notification-service")], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "NOTIFICATION_CHANNEL" in result.stderr and result.stderr.strip().count("\n") == 0


def test_delivery_claims(redis_client: redis.Redis) -> None:
    ledger = DeliveryLedger(redis_client)
    order_id = "cd" * 16
    assert ledger.claim(order_id, "task-a", "1", 60) == "claimed"
    assert ledger.claim(order_id, "task-a", "1", 60) == "claimed"  # the same attempt, written again
    assert ledger.claim(order_id, "task-b", "2", 60) == "busy"  # another task: a duplicate
    assert ledger.claim(order_id, "task-a", "3", 60) == "held"  # a second copy of the same message
    assert ledger.claim(order_id, "task-a", "3", 90, redelivered=True) == "claimed"  # its holder died
    assert 60 < ledger.claim_seconds_left(order_id) <= 90
    assert ledger.claim(order_id, "task-a", "1", 60) == "held"  # the old attempt lost its claim
    ledger.release(order_id)
    assert ledger.claim_seconds_left(order_id) == 0
    assert ledger.claim(order_id, "task-b", "4", 60) == "claimed"
    assert ledger.record_delivery(order_id, "4") == 1
    assert ledger.record_delivery(order_id, "4") == 1  # the same delivery, recorded again
    assert ledger.claim(order_id, "task-c", "5", 60) == "delivered"
    assert redis_client.exists(claim_key(order_id)) == 0
    assert ledger.record_delivery(order_id, "6") == 2  # another attempt delivered: the audit count
    ledger.record_failure(order_id)  # too late: delivered already
    assert ledger.claim(order_id, "task-d", "7", 60) == "delivered"
    other = "ef" * 16
    ledger.record_failure(other)
    assert ledger.claim(other, "task-a", "8", 60) == "failed"


def test_ledger_writes_wait_for_replicas_but_never_stop_for_missing_ones(redis_client: redis.Redis) -> None:
    """With replicas to wait for, each write is followed by WAIT; a Redis without replicas answers
    it with 0 after the timeout, and the write stands (that master holds it)."""

    def waits() -> int:
        return int(redis_client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))

    ledger = DeliveryLedger(redis_client, replicas=1, replica_timeout=0.05)
    order_id = "ab" * 16
    before = waits()
    assert ledger.claim(order_id, "task-a", "1", 60) == "claimed"
    assert ledger.record_delivery(order_id, "1") == 1
    assert ledger.delivered(order_id) == 1
    assert waits() - before == 2
