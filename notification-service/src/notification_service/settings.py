"""The notification service's settings: every environment variable it reads, validated in one place."""

from __future__ import annotations

from pydantic import Field, field_validator

from common_tasks.config import WorkerSettings


class NotificationSettings(WorkerSettings):
    # `log` (the default channel), or `module:attribute` naming a factory that returns a channel.
    NOTIFICATION_CHANNEL: str = "log"
    NOTIFICATION_MAX_RETRIES: int = Field(default=5, ge=0, le=50)
    # First retry delay; doubles on every retry (capped at 60 s), with jitter.
    NOTIFICATION_RETRY_BACKOFF_SECONDS: float = Field(default=1.0, gt=0, le=60)

    @field_validator("NOTIFICATION_CHANNEL")
    @classmethod
    def _channel_spec(cls, value: str) -> str:
        if value != "log" and value.count(":") != 1:
            raise ValueError("must be `log` or `module:attribute`")
        return value
