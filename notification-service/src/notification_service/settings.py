"""The notification service's settings: every environment variable it reads, validated in one place."""

from __future__ import annotations

import math

from pydantic import Field, ValidationInfo, field_validator, model_validator

from common_tasks.celery_app import longest_countdown, task_time_limit
from common_tasks.config import WorkerSettings, check_redis_url
from common_tasks.redis_urls import replicas_to_wait_for

# After the channel's call, this long at most goes to recording the delivery (retried while Redis is
# unreachable) before the attempt's hard time limit.
RECORD_SECONDS = 15.0


class NotificationSettings(WorkerSettings):
    # `log` (the default channel), or `module:attribute` naming a factory that returns a channel.
    NOTIFICATION_CHANNEL: str = "log"
    NOTIFICATION_MAX_RETRIES: int = Field(default=5, ge=0, le=50)
    # First retry delay; doubles on every retry (capped at 60 s, or less with a short visibility
    # timeout: common_tasks.celery_app.longest_countdown), with jitter.
    NOTIFICATION_RETRY_BACKOFF_SECONDS: float = Field(default=1.0, gt=0, le=60)
    # The delivery ledger (claims, delivery counts) of this service; by default the broker's database.
    NOTIFICATION_LEDGER_URL: str | None = None
    # The channel's own timeout for one delivery (a transient failure when it passes); by default 10 s,
    # or half of every task's time limit if that is less (see delivery_timeout).
    NOTIFICATION_DELIVERY_TIMEOUT_SECONDS: float | None = Field(default=None, gt=0, le=600)
    # Attempts that died without an outcome (their process was killed) before the confirmation is
    # given up as failed: a message that kills whatever runs it is not tried forever.
    NOTIFICATION_MAX_ABANDONED_ATTEMPTS: int = Field(default=3, ge=1, le=100)

    @field_validator("NOTIFICATION_LEDGER_URL")
    @classmethod
    def _ledger_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_redis_url(value, info)

    @field_validator("NOTIFICATION_CHANNEL")
    @classmethod
    def _channel_spec(cls, value: str) -> str:
        if value != "log" and value.count(":") != 1:
            raise ValueError("must be `log` or `module:attribute`")
        return value

    @model_validator(mode="after")
    def _delivery_fits_the_visibility_timeout(self) -> NotificationSettings:
        timeout = self.NOTIFICATION_DELIVERY_TIMEOUT_SECONDS
        if timeout is not None and 2 * timeout > task_time_limit(self.CELERY_VISIBILITY_TIMEOUT):
            needed = math.ceil(2 * timeout / task_time_limit(1))
            raise ValueError(
                f"NOTIFICATION_DELIVERY_TIMEOUT_SECONDS={timeout:g} needs "
                f"CELERY_VISIBILITY_TIMEOUT of at least {needed} (a delivery and its record must end before "
                "Redis redelivers the message)"
            )
        return self

    @property
    def ledger_url(self) -> str:
        return self.NOTIFICATION_LEDGER_URL or self.CELERY_BROKER_URL

    @property
    def ledger_replicas(self) -> int:
        """Replicas that must hold each claim and delivery record (notification_service.ledger)."""
        return replicas_to_wait_for(self.ledger_url)

    @property
    def delivery_timeout(self) -> float:
        """The channel's timeout: as set, or 10 s within half of every task's time limit (the other
        half at least is left to record the outcome)."""
        if self.NOTIFICATION_DELIVERY_TIMEOUT_SECONDS is not None:
            return self.NOTIFICATION_DELIVERY_TIMEOUT_SECONDS
        return min(10.0, task_time_limit(self.CELERY_VISIBILITY_TIMEOUT) / 2)

    @property
    def delivery_time_limit(self) -> float:
        """The hard time limit of one delivery attempt: the channel's timeout, then up to
        RECORD_SECONDS to record the outcome, within every task's limit (at least as long again as
        the channel's timeout: see the validator)."""
        longest = task_time_limit(self.CELERY_VISIBILITY_TIMEOUT)
        return min(self.delivery_timeout + RECORD_SECONDS, longest)

    @property
    def ledger_failover_seconds(self) -> float:
        """How long a claim is written again while the connection fails (a failover takes a few
        seconds): what the attempt has left after the channel's timeout."""
        return self.delivery_time_limit - self.delivery_timeout

    @property
    def delivery_claim_seconds(self) -> int:
        """How long a delivery claim lives: the attempt's hard time limit, after which the pool
        child running it is killed, so an older claim belongs to no live attempt."""
        return max(1, math.ceil(self.delivery_time_limit))

    @property
    def longest_retry_countdown(self) -> float:
        return longest_countdown(self.CELERY_VISIBILITY_TIMEOUT)
