"""The order service's settings: every environment variable it reads, validated in one place."""

from __future__ import annotations

from pydantic import Field

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
