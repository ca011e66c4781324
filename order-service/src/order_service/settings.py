"""The order service's settings: every environment variable it reads, validated in one place."""

from __future__ import annotations

from pydantic import Field

from common_tasks.redis_urls import replicas_to_wait_for
from order_store.settings import OrderStoreSettings


class OrderServiceSettings(OrderStoreSettings):
    HOST: str = "0.0.0.0"
    PORT: int = Field(default=8000, ge=1, le=65535)
    # gunicorn worker processes, each with WEB_THREADS threads (gthread worker class).
    WEB_CONCURRENCY: int = Field(default=2, ge=1, le=64)
    WEB_THREADS: int = Field(default=4, ge=1, le=64)
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

    @property
    def accept_replicas(self) -> int:
        if self.ORDER_ACCEPT_REPLICAS is not None:
            return self.ORDER_ACCEPT_REPLICAS
        return replicas_to_wait_for(self.order_store_url)
