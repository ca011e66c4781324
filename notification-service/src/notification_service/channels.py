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
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


class ChannelTimeout(TimeoutError):
    """The channel's call outlasted its timeout (a transient failure)."""


@contextmanager
def at_most(seconds: float) -> Iterator[None]:
    """Interrupt the block with ChannelTimeout after `seconds` (SIGALRM, in a pool process's main
    thread; elsewhere the block runs unbounded). Channels time out by themselves; this bounds one
    that does not, whatever Celery's own time limits are doing (a broker reconnect suspends them),
    and only around the channel's call, never while the task's result crosses the pool's pipe."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise ChannelTimeout(f"no answer from the channel within {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def load_channel(spec: str) -> NotificationChannel:
    if spec == "log":
        return LogChannel()
    module_name, _, attribute = spec.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory()
