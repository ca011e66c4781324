"""Channels for tests, loaded by the service through NOTIFICATION_CHANNEL=scripted_channels:<name>.

They keep their state in Redis (SCRIPTED_CHANNEL_REDIS_URL), because retries may run in another
pool process than the first attempt.
"""

from __future__ import annotations

import os
from typing import Any

import redis

from common_tasks.schemas import SendOrderConfirmation
from notification_service.channels import LogChannel, PermanentChannelError, TransientChannelError


class _Scripted(LogChannel):
    def __init__(self) -> None:
        self.redis = redis.Redis.from_url(os.environ["SCRIPTED_CHANNEL_REDIS_URL"])
        self.failures = int(os.environ.get("SCRIPTED_CHANNEL_FAILURES", "0"))

    def attempt(self, confirmation: SendOrderConfirmation) -> int:
        return int(self.redis.incr(f"scripted-channel:attempts:{confirmation.order_id}"))


class FlakyChannel(_Scripted):
    """Fails with a transient error SCRIPTED_CHANNEL_FAILURES times per order, then delivers."""

    def send(self, confirmation: SendOrderConfirmation, **options: Any) -> str:
        if self.attempt(confirmation) <= self.failures:
            raise TransientChannelError("provider timed out")
        return super().send(confirmation, **options)


class BrokenChannel(_Scripted):
    """Always fails permanently."""

    def send(self, confirmation: SendOrderConfirmation, **options: Any) -> None:
        self.attempt(confirmation)
        raise PermanentChannelError("mailbox does not exist")


class ProcessKillingChannel(_Scripted):
    """Kills the process that calls it (a poison message: a crash in native code, the OOM killer)."""

    def send(self, confirmation: SendOrderConfirmation, **options: Any) -> None:
        self.attempt(confirmation)
        os._exit(1)
