"""The task of the `notifications` queue: deliver an order confirmation once, then report back.
Only the business step; parsing, rejection and store retries are common_tasks.handlers'."""

from __future__ import annotations

import logging
import random

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded

from common_tasks.handlers import Outcome, contract_task
from common_tasks.schemas import RecordNotification, SendOrderConfirmation
from common_tasks.tasks import SEND_ORDER_CONFIRMATION, send_record_notification
from notification_service.channels import NotificationChannel, TransientChannelError
from notification_service.ledger import DeliveryLedger, new_attempt
from notification_service.settings import NotificationSettings

# Worth another try: the channel said so, or the delivery ran out of time (soft time limit).
TRANSIENT_DELIVERY_ERRORS = (TransientChannelError, ConnectionError, TimeoutError, SoftTimeLimitExceeded)


class ClaimHeld(Exception):
    """Another attempt of the same task id holds the order's delivery claim."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"another attempt of this task holds the claim on order {order_id}")


def backoff_seconds(base: float, retries: int) -> float:
    """Exponential backoff with full jitter in its upper half: base * 2**retries, capped at 60 s."""
    delay = min(60.0, base * (2**retries))
    return delay * random.uniform(0.5, 1.0)


def register_notification_tasks(
    app: Celery, settings: NotificationSettings, ledger: DeliveryLedger, channel: NotificationChannel
) -> None:
    def report(order_id: str, outcome: str, detail: str = "") -> None:
        """Tell the orders side the outcome, with the ledger's delivery count."""
        deliveries = ledger.delivered(order_id)
        payload = RecordNotification(order_id=order_id, outcome=outcome, detail=detail, deliveries=deliveries)
        send_record_notification(app, payload)

    @contract_task(
        app,
        SEND_ORDER_CONFIRMATION,
        # One delivery attempt is cut off (a transient failure) after NOTIFICATION_DELIVERY_TIMEOUT_SECONDS
        # and killed a little later; a claim cannot outlive that, so it expires with the hard limit.
        soft_time_limit=settings.delivery_time_limits[0],
        time_limit=settings.delivery_time_limits[1],
    )
    def send_order_confirmation(self: Task, confirmation: SendOrderConfirmation) -> str | Outcome:
        order_id = confirmation.order_id
        attempt = new_attempt()
        redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
        claim = ledger.claim(order_id, self.request.id or "", attempt, settings.delivery_claim_seconds, redelivered)
        if claim == "delivered":
            # Delivered before (this is a redelivery): only make sure the outcome gets recorded.
            report(order_id, "sent")
            return f"order {order_id}: confirmation delivered before, outcome reported again"
        if claim == "failed":
            report(order_id, "failed", "the channel gave up earlier")
            return f"order {order_id}: confirmation failed before, outcome reported again"
        if claim == "busy":
            # A duplicate (another task id) while a copy is delivering. That copy reports the outcome,
            # or, if it dies, its own message is redelivered and takes its claim over: this one is
            # dropped instead of retried, so duplicates never pile up as retries.
            return f"order {order_id}: another copy is delivering the confirmation; duplicate dropped"
        if claim == "held":
            # A second copy of this very message (a failover can leave one behind) while another attempt
            # of it delivers, or holds a claim it could not release: ask again once that claim is over.
            countdown = ledger.claim_seconds_left(order_id) + 1
            raise self.retry(countdown=countdown, max_retries=None, exc=ClaimHeld(order_id)) from None
        try:
            receipt = channel.send(confirmation)
        except TRANSIENT_DELIVERY_ERRORS as error:
            if self.request.retries >= settings.NOTIFICATION_MAX_RETRIES:
                ledger.record_failure(order_id)
                report(order_id, "failed", f"gave up after {self.request.retries} retries: {error}")
                return Outcome(
                    f"order {order_id}: confirmation failed after {self.request.retries} retries: {error}",
                    logging.ERROR,
                )
            ledger.release(order_id)
            countdown = backoff_seconds(settings.NOTIFICATION_RETRY_BACKOFF_SECONDS, self.request.retries)
            # Celery logs the retry as this task's one line: "retry: Retry in <countdown>s: <error>".
            raise self.retry(countdown=countdown, max_retries=None, exc=error) from None
        except Exception as error:  # noqa: BLE001 - any other channel error is permanent
            ledger.record_failure(order_id)
            report(order_id, "failed", str(error)[:500])
            return Outcome(f"order {order_id}: confirmation failed permanently: {error}", logging.ERROR)
        ledger.record_delivery(order_id, attempt)  # also frees the claim
        report(order_id, "sent")
        return f"confirmation for order {order_id} delivered {receipt or ''}".rstrip()
