"""Notification channels: how an order confirmation reaches the customer.

A channel is any object with `send(confirmation, *, idempotency_key, timeout)`. It raises
TransientChannelError (or a ConnectionError or TimeoutError) for failures worth retrying (the service
retries with backoff) and anything else for permanent ones (the order's notification is marked
failed). It gives up by itself after `timeout` seconds. `idempotency_key` (the order id) is the same
for every attempt at one confirmation: a receiver that honours it (an `Idempotency-Key` header, a
`Message-ID` derived from it) delivers once even in the one case the service cannot rule out, a
process killed between the channel's delivery and its record (README: Failure behaviour).
Choose one with NOTIFICATION_CHANNEL=`log` or `module:attribute`,
where the attribute is a class or function called with no arguments that returns the channel.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from common_tasks.schemas import SendOrderConfirmation


class TransientChannelError(Exception):
    """The channel may succeed later (timeout, rate limit, provider outage)."""


class PermanentChannelError(Exception):
    """The channel will never deliver this confirmation (bad address, rejected content)."""


class NotificationChannel(Protocol):
    def send(self, confirmation: SendOrderConfirmation, *, idempotency_key: str, timeout: float) -> str | None:
        """Deliver, or raise; may return a short receipt for the task's log line."""


def masked(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


class LogChannel:
    """The default channel: the confirmation is the task's log line (the store counts each delivery)."""

    def send(self, confirmation: SendOrderConfirmation, *, idempotency_key: str = "", timeout: float = 0) -> str:
        return f"to {masked(confirmation.customer_email)}: total {confirmation.total}"


def load_channel(spec: str) -> NotificationChannel:
    if spec == "log":
        return LogChannel()
    module_name, _, attribute = spec.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory()
