"""Rate limits per caller (ORDER_RATE_LIMIT), shared by every gunicorn process and every replica
through Redis with the `limits` library (the one under Flask-Limiter): its sliding window counter
on the order store's Redis. A caller is its key (hashed: no key reaches Redis), or its address
when the service has no keys. Past the limit: 429 with Retry-After.

The same operations as the keys guard (the OpenAPI document's `authenticated` ones); probes, the
document and /metrics are never limited. When Redis does not answer, requests pass: the order
store is on the same Redis, so the operation itself answers 503.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

import redis
from flask import Flask, Response, request
from limits import RateLimitItem, parse_many
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from order_service.api import error_response
from order_service.auth import guarded, presented_key

logger = logging.getLogger("order_service")
# Every key the limiter writes starts with this (LIMITS:LIMITER/...).
KEY_PREFIX = "LIMITS"


def caller(keys_configured: bool) -> str:
    key = presented_key(request.headers.get("Authorization")) if keys_configured else None
    if key is not None:
        return "key:" + hashlib.sha256(key).hexdigest()[:32]
    return f"address:{request.remote_addr}"


def limit_rate(app: Flask, rate_limit: str, client: redis.Redis, keys_configured: bool) -> None:
    limits: list[RateLimitItem] = parse_many(rate_limit)
    # With a pool, `limits` uses it and not the URI (which it requires all the same).
    limiter = SlidingWindowCounterRateLimiter(
        RedisStorage("redis://", connection_pool=client.connection_pool, key_prefix=KEY_PREFIX)
    )

    @app.before_request
    def within_rate() -> Response | None:
        if not guarded():
            return None
        who = caller(keys_configured)
        try:
            exceeded = [limit for limit in limits if not limiter.hit(limit, who)]
            if not exceeded:
                return None
            reset = max(limiter.get_window_stats(limit, who).reset_time for limit in exceeded)
        except redis.RedisError as error:
            logger.warning("rate limit not checked, Redis did not answer: %s", error)
            return None
        response = error_response(429, "rate_limited", f"more than {rate_limit} requests; retry later")
        response.headers["Retry-After"] = str(max(1, math.ceil(reset - time.time())))
        return response
