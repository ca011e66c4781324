from __future__ import annotations

from collections.abc import Iterator

import pytest

from stack_testkit import RedisServer, ServiceLauncher

UNLIMITED = "1000000/second"


@pytest.fixture(scope="module")
def api_server(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One order-service (gunicorn, from its console script) per test module; yields its base URL."""
    launcher = ServiceLauncher(redis_server, tmp_path_factory.mktemp("order-service"))
    # Unlimited: the tests post from one address faster than a caller may (test_rate_limit.py).
    _, base_url = launcher.start_http("order-service", ORDER_RATE_LIMIT=UNLIMITED)
    yield base_url
    launcher.stop_all()
