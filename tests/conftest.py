"""Cross-service fixtures: the whole stack as real processes against a real Redis."""

from __future__ import annotations

import pytest

from full_stack import Stack
from stack_testkit import RedisServer, ServiceLauncher


@pytest.fixture
def stack(services: ServiceLauncher, redis_server: RedisServer) -> Stack:
    return Stack(services, redis_server).start()
