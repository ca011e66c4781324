"""The notification service's settings: every environment variable it reads, validated in one place."""

from __future__ import annotations

import math

from pydantic import Field, ValidationInfo, field_validator

from common_tasks.celery_app import task_time_limits
from common_tasks.config import WorkerSettings, check_redis_url
from common_tasks.redis_urls import replicas_to_wait_for


class NotificationSettings(WorkerSettings):
    # `log` (the default channel), or `module:attribute` naming a factory that returns a channel.
    NOTIFICATION_CHANNEL: str = "log"
    NOTIFICATION_MAX_RETRIES: int = Field(default=5, ge=0, le=50)
    # First retry delay; doubles on every retry (capped at 60 s), with jitter.
    NOTIFICATION_RETRY_BACKOFF_SECONDS: float = Field(default=1.0, gt=0, le=60)
    # The delivery ledger (claims, delivery counts) of this service; by default the broker's database.
    NOTIFICATION_LEDGER_URL: str | None = None
    # One delivery attempt may take this long before it counts as a transient failure.
    NOTIFICATION_DELIVERY_TIMEOUT_SECONDS: int = Field(default=30, ge=1, le=3600)

    @field_validator("NOTIFICATION_LEDGER_URL")
    @classmethod
    def _ledger_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_redis_url(value, info)

    @property
    def ledger_url(self) -> str:
        return self.NOTIFICATION_LEDGER_URL or self.CELERY_BROKER_URL

    @property
    def ledger_replicas(self) -> int:
        """Replicas that must hold each claim and delivery record (notification_service.ledger)."""
        return replicas_to_wait_for(self.ledger_url)

    @property
    def ledger_failover_seconds(self) -> float:
        """How long a ledger write is tried again while the connection fails (a failover takes a few
        seconds), within half of one delivery attempt's time."""
        return min(20.0, self.delivery_time_limits[0] / 2)

    @property
    def delivery_time_limits(self) -> tuple[float, float]:
        """(soft, hard) time limits of one delivery attempt: NOTIFICATION_DELIVERY_TIMEOUT_SECONDS and
        10 s more, within every task's limits (common_tasks.celery_app.task_time_limits)."""
        soft_cap, hard_cap = task_time_limits(self.CELERY_VISIBILITY_TIMEOUT)
        soft = min(float(self.NOTIFICATION_DELIVERY_TIMEOUT_SECONDS), soft_cap)
        return soft, min(soft + 10, hard_cap)

    @property
    def delivery_claim_seconds(self) -> int:
        """How long a delivery claim lives: the attempt's hard time limit, after which the pool
        child running it is killed, so an older claim belongs to no live attempt."""
        return max(1, math.ceil(self.delivery_time_limits[1]))

    @field_validator("NOTIFICATION_CHANNEL")
    @classmethod
    def _channel_spec(cls, value: str) -> str:
        if value != "log" and value.count(":") != 1:
            raise ValueError("must be `log` or `module:attribute`")
        return value
