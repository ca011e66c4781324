"""The one factory of the services' own Redis clients (the order store, the delivery ledger,
order-service's readiness probe): strings in and out, short timeouts so that an outage fails a call
in about a second instead of hanging it.

A `sentinel://` URL (common_tasks.redis_urls) gives a client of the master that the Sentinels name
(redis-py's `Sentinel.master_for`): every new connection asks the Sentinels first, and a connection
to a server that stopped being the master (gone, or demoted to a read-only replica) is dropped, so
after a failover the next call reaches the new master.
"""

from __future__ import annotations

import redis
from redis.sentinel import Sentinel

from common_tasks.redis_urls import is_sentinel_url, parse_sentinel_url

SOCKET_CONNECT_TIMEOUT = 1.0
SOCKET_TIMEOUT = 2.0


def sentinel_kwargs(socket_timeout: float = SOCKET_TIMEOUT) -> dict[str, float]:
    """Options of the connections to the Sentinels themselves (redis-py, kombu and Celery alike)."""
    return {"socket_connect_timeout": SOCKET_CONNECT_TIMEOUT, "socket_timeout": socket_timeout}


def redis_client(
    url: str,
    sentinel_master: str | None = None,
    *,
    socket_timeout: float = SOCKET_TIMEOUT,
) -> redis.Redis:
    """A client of `url`: a Redis URL, or a Sentinel URL with the master's name."""
    options = {
        "decode_responses": True,
        "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
        "socket_timeout": socket_timeout,
        "health_check_interval": 10,
    }
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    if not sentinel_master:
        raise ValueError("a sentinel:// URL needs the master's name (REDIS_SENTINEL_MASTER)")
    parsed = parse_sentinel_url(url)
    sentinel = Sentinel(list(parsed.addresses), sentinel_kwargs=sentinel_kwargs(socket_timeout))
    return sentinel.master_for(
        sentinel_master,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        **options,
    )
