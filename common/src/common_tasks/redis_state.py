"""A Redis client for a service's own state (the order store, the delivery ledger): strings in and
out, short timeouts so that an outage fails a call in about a second instead of hanging it."""

from __future__ import annotations

import redis

SOCKET_CONNECT_TIMEOUT = 1.0
SOCKET_TIMEOUT = 2.0


def state_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=SOCKET_CONNECT_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        health_check_interval=10,
    )
