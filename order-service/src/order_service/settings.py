"""The order service's settings: every environment variable it reads, validated in one place."""

from __future__ import annotations

import ipaddress

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator

from common_tasks.redis_urls import replicas_to_wait_for
from order_store.settings import OrderStoreSettings

# A key must be hard to guess: at least this many characters (e.g. `openssl rand -hex 24` gives 48).
MIN_API_KEY_LENGTH = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OrderServiceSettings(OrderStoreSettings):
    # Loopback unless set: the images set 0.0.0.0 (nix/images.toml), and then need ORDER_API_KEYS.
    HOST: str = "127.0.0.1"
    # The callers' keys, comma-separated: each request to /orders sends `Authorization: Bearer
    # <key>`. Empty: the API serves only on a loopback HOST (the development stack).
    ORDER_API_KEYS: SecretStr = SecretStr("")
    # Requests per caller (its key; its address when the service has no keys) to the orders
    # operations, in the `limits` notation: "100/second", "5000/minute", "10/second;1000/hour".
    ORDER_RATE_LIMIT: str = "100/second"
    PORT: int = Field(default=8000, ge=1, le=65535)
    # gunicorn worker processes (gevent worker class), each serving up to WEB_CONNECTIONS connections
    # at once: a client that sends its request slowly holds a greenlet, never a thread the others need.
    WEB_CONCURRENCY: int = Field(default=2, ge=1, le=64)
    WEB_CONNECTIONS: int = Field(default=1000, ge=1, le=10000)
    WEB_TIMEOUT: int = Field(default=30, ge=1)
    WEB_GRACEFUL_TIMEOUT: int = Field(default=20, ge=1)
    # One access log line per HTTP request (in LOG_FORMAT); the API logs every accepted order anyway.
    WEB_ACCESS_LOG: bool = False
    # Redis replicates asynchronously: a master lost right after a write takes the write with it.
    # An order is answered 202 only once this many replicas hold its record (Redis WAIT); else 503.
    # Unset: 1 when the order store is a sentinel:// URL (a failover must not lose accepted orders),
    # 0 otherwise (a single Redis has no replica to wait for).
    ORDER_ACCEPT_REPLICAS: int | None = Field(default=None, ge=0, le=16)
    ORDER_ACCEPT_REPLICA_TIMEOUT_SECONDS: float = Field(default=0.5, gt=0, le=10)

    @field_validator("ORDER_RATE_LIMIT")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError:
            raise ValueError("must be N/second, N/minute, N/hour or N/day, several joined by ;") from None
        return value

    @property
    def api_keys(self) -> tuple[bytes, ...]:
        return tuple(key.strip().encode() for key in self.ORDER_API_KEYS.get_secret_value().split(",") if key.strip())

    @model_validator(mode="after")
    def _keys_unless_loopback(self) -> OrderServiceSettings:
        # The message names the rule, never a key.
        if any(len(key) < MIN_API_KEY_LENGTH or not key.isascii() or b" " in key for key in self.api_keys):
            raise ValueError(f"ORDER_API_KEYS: every key needs {MIN_API_KEY_LENGTH}+ ASCII characters, no spaces")
        if not self.api_keys and not is_loopback(self.HOST):
            raise ValueError(
                f"ORDER_API_KEYS is empty and HOST={self.HOST} is not loopback: set ORDER_API_KEYS "
                "(comma-separated keys, e.g. `openssl rand -hex 24`), or serve on HOST=127.0.0.1"
            )
        return self

    @property
    def accept_replicas(self) -> int:
        if self.ORDER_ACCEPT_REPLICAS is not None:
            return self.ORDER_ACCEPT_REPLICAS
        return replicas_to_wait_for(self.order_store_url)
