"""The stall watchdog's verdicts against a real Redis (the worker-level tests are in worker/tests)."""

import time
from pathlib import Path

import redis

from common_tasks.watchdog import StallWatchdog


def watchdog(tmp_path: Path, client: redis.Redis) -> StallWatchdog:
    beat = tmp_path / "heartbeat"
    beat.touch()
    return StallWatchdog(beat, "orders", limit=0.2, longest_task=0.2, broker=client)


def test_a_consumer_that_takes_nothing_while_its_queue_fills_is_stalled(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    dog = watchdog(tmp_path, redis_client)
    assert dog.verdict() is None
    time.sleep(0.5)
    (tmp_path / "heartbeat").touch()  # the event loop still runs
    assert dog.verdict() is None  # nothing waits: an idle worker is not a stalled one
    redis_client.lpush("orders", "a message")
    assert (reason := dog.verdict()) is not None and "while 1 wait in orders" in reason
    dog.received()
    assert dog.verdict() is None


def test_a_stop_is_bounded_and_a_missing_heartbeat_counts_from_when_it_went_missing(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    dog = watchdog(tmp_path, redis_client)
    time.sleep(0.5)
    (tmp_path / "heartbeat").unlink()  # the consumer restarts (a reconnect)
    assert dog.verdict() is None
    time.sleep(0.3)
    assert (reason := dog.verdict()) is not None and reason.startswith("no progress")
    dog.stopping()
    assert dog.verdict() is None  # a stop removes the heartbeat and waits for running tasks
    time.sleep(0.5)
    assert (reason := dog.verdict()) is not None and reason.startswith("a stop still not ended")


def test_no_verdict_while_the_broker_is_away(tmp_path: Path) -> None:
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.1)
    dog = watchdog(tmp_path, unreachable)
    (tmp_path / "heartbeat").unlink()
    time.sleep(0.5)
    assert dog.verdict() is None
