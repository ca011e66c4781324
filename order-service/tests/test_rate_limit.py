"""ORDER_RATE_LIMIT on the real service: two `order-service` replicas of two gunicorn processes
each, on one Redis, share every caller's budget; past it, 429 with Retry-After."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from sample_orders import sample_order

from stack_testkit import RedisServer, ServiceLauncher, console_script, http_request

LIMIT = 10
KEYS = ("rate-limit-key-one-0123", "rate-limit-key-two-0123")


@pytest.fixture(scope="module")
def replicas(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    launcher = ServiceLauncher(redis_server, tmp_path_factory.mktemp("order-service-limited"))
    env = {"ORDER_RATE_LIMIT": f"{LIMIT}/minute", "ORDER_API_KEYS": ",".join(KEYS), "WEB_CONCURRENCY": "2"}
    urls = [launcher.start_http("order-service", **env)[1] for _ in range(2)]
    yield urls
    launcher.stop_all()


def post(url: str, key: str):  # type: ignore[no-untyped-def]
    return http_request("POST", f"{url}/orders", sample_order(), headers={"Authorization": f"Bearer {key}"})


def test_a_key_gets_its_limit_across_replicas_and_processes_then_429(replicas: list[str]) -> None:
    # Each request a new connection, alternating replicas: four processes serve them.
    answers = [post(replicas[n % 2], KEYS[0]) for n in range(LIMIT + 3)]
    assert [answer.status for answer in answers] == [202] * LIMIT + [429] * 3
    refused = answers[-1]
    assert refused.json()["error"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Another key has its own budget; probes are never limited.
    assert post(replicas[0], KEYS[1]).status == 202
    assert all(http_request("GET", f"{url}/healthz").status == 200 for url in replicas for _ in range(3))


def test_a_bad_limit_is_one_line() -> None:
    result = subprocess.run(
        [console_script("order-service"), "check-config"],
        env={**os.environ, "ORDER_RATE_LIMIT": "lots"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "ORDER_RATE_LIMIT: must be N/second" in result.stderr
