"""The `notification-service` console script against a real Redis."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import redis

from common_tasks.schemas import SendOrderConfirmation
from common_tasks.tasks import RECORD_NOTIFICATION, send_order_confirmation
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


def test_a_copy_that_finds_the_claim_held_is_dropped(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """A copy of a confirmation (a redelivery, or a second message) that finds another attempt's claim
    never takes it over, even if that attempt's message is this very one: it is dropped, and the
    order's lease (worker.reconciler) brings the confirmation back once the claim has expired."""
    order_id = "5" * 32
    service = services.start("notification-service", **scripted(services, redis_server, "FlakyChannel"))
    redis_client.set(claim_key(order_id), "another-attempt", ex=60)
    send_order_confirmation(redis_server.celery_app(), confirmation(order_id))

    wait_until(lambda: "this copy dropped" in service.log(), 30, "the copy was not dropped")
    assert outcomes(redis_client) == []
    assert redis_server.client(3).get(f"scripted-channel:attempts:{order_id}") is None
    assert redis_client.get(claim_key(order_id)) == "another-attempt"


def test_a_confirmation_that_kills_its_process_is_given_up(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """A poison confirmation (its channel call kills the pool process every time) is not tried
    forever: after NOTIFICATION_MAX_ABANDONED_ATTEMPTS attempts died holding the claim, the next copy
    records it as failed. Here the test sends the copies the orders side's lease would send."""
    order_id = "6" * 32
    env = {
        **scripted(services, redis_server, "ProcessKillingChannel"),
        "CELERY_VISIBILITY_TIMEOUT": "4",  # claims of 2 s (the attempt's hard limit)
        "NOTIFICATION_DELIVERY_TIMEOUT_SECONDS": "0.5",
        "NOTIFICATION_MAX_ABANDONED_ATTEMPTS": "2",
    }
    service = services.start("notification-service", **env)
    app = redis_server.celery_app()
    deadline = time.monotonic() + 40
    while not outcomes(redis_client) and time.monotonic() < deadline:
        send_order_confirmation(app, confirmation(order_id))
        time.sleep(2.5)
    [outcome] = outcomes(redis_client)
    assert (outcome["outcome"], outcome["deliveries"]) == ("failed", 0)
    assert "2 attempts died before an outcome" in outcome["detail"]
    assert redis_server.client(3).get(f"scripted-channel:attempts:{order_id}") == "2"
    assert service.alive()


def test_transient_failures_are_retried_with_backoff(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    send_order_confirmation(redis_server.celery_app(), confirmation("2" * 32))
    service = services.start("notification-service", **scripted(services, redis_server, "FlakyChannel", failures=3))

    wait_until(lambda: outcomes(redis_client), 30, "no outcome reported")
    assert outcomes(redis_client)[0]["outcome"] == "sent"
    log = service.log()
    assert [log.count(f"retry {n} in ") for n in (1, 2, 3, 4)] == [1, 1, 1, 0]
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
    # The channel's own error text stays in this service's log: the detail is public (GET /orders).
    assert outcome["outcome"] == "failed" and outcome["detail"] == "the channel refused the confirmation"
    assert "mailbox does not exist" in service.log()
    assert service.log().count("confirmation failed permanently") == 1
    assert redis_server.client(3).get(f"scripted-channel:attempts:{'4' * 32}") == "1"
    assert outcome["deliveries"] == 0


def test_unloadable_channel_fails_fast(services: ServiceLauncher) -> None:
    env = services.environment(NOTIFICATION_CHANNEL="no_such_module:Channel")
    result = subprocess.run([console_script("notification-service")], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "NOTIFICATION_CHANNEL" in result.stderr and result.stderr.strip().count("\n") == 0


def test_delivery_claims_are_token_locks(redis_client: redis.Redis) -> None:
    ledger = DeliveryLedger(redis_client)
    order_id = "ef" * 16
    assert ledger.claim(order_id, "t1", 60, 3) == "claimed"
    assert ledger.claim(order_id, "t1", 60, 3) == "claimed"  # the same attempt, written again
    assert ledger.claim(order_id, "t2", 60, 3) == "busy"  # never taken over
    ledger.release(order_id, "t2")  # not its claim: nothing happens
    assert redis_client.get(claim_key(order_id)) == "t1"
    ledger.release(order_id, "t1")
    assert redis_client.exists(claim_key(order_id)) == 0
    assert ledger.claim(order_id, "t3", 60, 3) == "claimed"
    redis_client.delete(claim_key(order_id))  # t3's claim expired: its process died
    assert ledger.claim(order_id, "t4", 60, 3) == "claimed"  # t3 counted as abandoned
    assert ledger.record_delivery(order_id, "t3") == 1  # t3 was alive after all: its delivery counts
    assert redis_client.get(claim_key(order_id)) == "t4"  # but t4's claim stays t4's
    assert ledger.record_delivery(order_id, "t3") == 1  # the same delivery, recorded again
    assert ledger.claim(order_id, "t5", 60, 3) == "delivered"
    assert ledger.record_delivery(order_id, "t4") == 2  # another attempt delivered: the audit count
    assert redis_client.exists(claim_key(order_id)) == 0
    ledger.record_failure(order_id, "t6")  # too late: delivered already
    assert ledger.claim(order_id, "t7", 60, 3) == "delivered"
    other = "12" * 16
    ledger.record_failure(other, "t1")
    assert ledger.claim(other, "t2", 60, 3) == "failed"


def test_attempts_that_die_holding_the_claim_are_counted(redis_client: redis.Redis) -> None:
    ledger = DeliveryLedger(redis_client)
    order_id = "fe" * 16
    for token in ("t1", "t2"):
        assert ledger.claim(order_id, token, 60, 3) == "claimed"
        redis_client.delete(claim_key(order_id))  # expired: the attempt died
    assert ledger.claim(order_id, "t3", 60, 3) == "claimed"  # two abandoned so far
    ledger.release(order_id, "t3")  # a retry: not abandoned
    assert ledger.claim(order_id, "t4", 60, 3) == "claimed"
    redis_client.delete(claim_key(order_id))
    assert ledger.claim(order_id, "t5", 60, 3) == "abandoned"
    assert redis_client.exists(claim_key(order_id)) == 0


def test_ledger_writes_wait_for_replicas_but_never_stop_for_missing_ones(redis_client: redis.Redis) -> None:
    """With replicas to wait for, each write is followed by WAIT; a Redis without replicas answers
    it with 0 after the timeout, and the write stands (that master holds it)."""

    def waits() -> int:
        return int(redis_client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))

    ledger = DeliveryLedger(redis_client, replicas=1, replica_timeout=0.05)
    order_id = "ab" * 16
    before = waits()
    assert ledger.claim(order_id, "t1", 60, 3) == "claimed"
    assert ledger.record_delivery(order_id, "t1") == 1
    assert ledger.delivered(order_id) == 1
    assert waits() - before == 2


def test_a_channel_timeout_that_cannot_fit_the_visibility_timeout_is_refused(services: ServiceLauncher) -> None:
    env = services.environment(CELERY_VISIBILITY_TIMEOUT="20", NOTIFICATION_DELIVERY_TIMEOUT_SECONDS="30")
    check = [console_script("notification-service"), "check-config"]
    result = subprocess.run(check, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "NOTIFICATION_DELIVERY_TIMEOUT_SECONDS=30 needs CELERY_VISIBILITY_TIMEOUT of at least 134" in result.stderr
    # Left unset, the timeout fits whatever the visibility timeout is.
    env = services.environment(CELERY_VISIBILITY_TIMEOUT="20")
    assert subprocess.run(check, env=env).returncode == 0


def test_retry_limits_above_celerys_default_are_honoured(
    services: ServiceLauncher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """`retry(max_retries=None)` would mean the task's own limit, not NOTIFICATION_MAX_RETRIES: every
    retry names its limit, so 12 retries are 13 attempts and one recorded failure."""
    send_order_confirmation(redis_server.celery_app(), confirmation("7" * 32))
    env = {
        **scripted(services, redis_server, "FlakyChannel", failures=100),
        "NOTIFICATION_RETRY_BACKOFF_SECONDS": "0.01",
        "CELERY_VISIBILITY_TIMEOUT": "4",  # retry countdowns of at most 1.8 s
    }
    service = services.start("notification-service", NOTIFICATION_MAX_RETRIES="12", **env)

    wait_until(lambda: outcomes(redis_client), 60, "no outcome reported")
    assert [o["outcome"] for o in outcomes(redis_client)] == ["failed"]
    assert service.log().count("confirmation failed after 12 retries") == 1
    assert redis_server.client(3).get(f"scripted-channel:attempts:{'7' * 32}") == "13"


def test_a_channel_call_that_ignores_its_timeout_is_interrupted() -> None:
    from notification_service.channels import ChannelTimeout, at_most

    started = time.monotonic()
    try:
        with at_most(0.2):
            time.sleep(5)
    except ChannelTimeout:
        pass
    else:
        raise AssertionError("the call was not interrupted")
    assert time.monotonic() - started < 2
    time.sleep(0.3)  # no alarm left behind
