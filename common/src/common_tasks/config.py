"""Settings shared by every service, read from environment variables only.

Each service parses its settings once at start-up through :func:`load_settings`; a missing or
malformed value stops the process with one line naming the variable.
"""

from __future__ import annotations

import sys
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common_tasks.redis_urls import SENTINEL_SCHEME, is_sentinel_url, parse_sentinel_url

REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def check_redis_url(value: str | None, info: ValidationInfo | None = None) -> str | None:
    """The validator of every Redis URL variable (None: not set). A Sentinel URL needs
    REDIS_SENTINEL_MASTER, which is declared before every URL so that `info` holds it."""
    if value is None:
        return value
    if is_sentinel_url(value):
        parse_sentinel_url(value)
        # Absent from info.data when REDIS_SENTINEL_MASTER itself is invalid (that line says so).
        if info is not None and info.data.get("REDIS_SENTINEL_MASTER", "?") is None:
            raise ValueError("a sentinel:// URL needs REDIS_SENTINEL_MASTER (the master's name the Sentinels monitor)")
        return value
    if not value.startswith(REDIS_URL_SCHEMES):
        schemes = ", ".join((*REDIS_URL_SCHEMES, SENTINEL_SCHEME))
        raise ValueError(f"must be a Redis URL starting with one of {schemes}")
    return value


class CommonSettings(BaseSettings):
    """Variables every service reads. Field names are the environment variable names."""

    # An empty variable counts as unset (compose passes every setting through, empty when not given).
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True, env_ignore_empty=True)

    # The master's name for every sentinel:// URL (kombu's `master_name`); first, so that the URL
    # validators see it.
    REDIS_SENTINEL_MASTER: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    CELERY_BROKER_URL: str = "redis://localhost:6379/0"
    CELERY_RESULT_BACKEND: str = "redis://localhost:6379/1"
    # Seconds before Redis redelivers a message that a (dead) worker took but never acknowledged.
    CELERY_VISIBILITY_TIMEOUT: int = Field(default=3600, ge=1)
    LOG_LEVEL: str = "INFO"
    # `text` (one human-readable line per record) or `json` (one JSON object per line, same fields).
    LOG_FORMAT: Literal["text", "json"] = "text"
    # `outcome`: one line per task outcome (Celery's own "received" and "succeeded" lines are
    # dropped; retries and failures keep Celery's lines). `celery`: Celery's default lines as well.
    LOG_TASK_LINES: Literal["outcome", "celery"] = "outcome"
    # Celery task events (worker_send_task_events, task_send_sent_event): what Flower and
    # `celery events` show. On by default; `false` saves their cost (see bench/).
    CELERY_TASK_EVENTS: bool = True

    @field_validator("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
    @classmethod
    def _redis_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_redis_url(value, info)

    @field_validator("LOG_LEVEL")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level


class WorkerSettings(CommonSettings):
    """Variables of the Celery worker processes (worker and notification-service)."""

    WORKER_CONCURRENCY: int = Field(default=2, ge=1, le=64)
    WORKER_HEARTBEAT_FILE: str = "/tmp/celery-worker.heartbeat"
    WORKER_HEARTBEAT_INTERVAL: float = Field(default=5.0, gt=0)
    # A worker whose heartbeat has not moved for this long while the broker answers exits (status 1)
    # to be restarted (common_tasks.runner.install_stall_watchdog). Above Celery's longest wait
    # between two reconnection attempts (30 s).
    WORKER_STALL_SECONDS: float = Field(default=60.0, ge=10)


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class ConfigError(SystemExit):
    """Raised (and exits the process) when the environment holds an invalid value."""


def describe_validation_error(error: ValidationError) -> list[str]:
    """One line per bad variable, e.g. `CELERY_VISIBILITY_TIMEOUT: Input should be ...` (without
    pydantic's `Value error, ` prefix on the messages of our own validators)."""
    lines = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]) or "environment"
        lines.append(f"{name}: {item['msg'].removeprefix('Value error, ')}")
    return lines


def load_settings(settings_class: type[SettingsT]) -> SettingsT:
    """Parse the environment into `settings_class`, or exit with one line per error."""
    try:
        return settings_class()
    except ValidationError as error:
        for line in describe_validation_error(error):
            print(f"configuration error: {line}", file=sys.stderr)
        raise ConfigError(2) from None
