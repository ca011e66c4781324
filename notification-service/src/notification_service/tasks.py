"""The task of the `notifications` queue: deliver an order confirmation once, then report back.
Only the business step; parsing, rejection and store retries are common_tasks.handlers'."""

from __future__ import annotations

import logging

from celery import Celery, Task

from common_tasks.celery_logs import summary
from common_tasks.handlers import Outcome, backoff_seconds, contract_task, retry_later
from common_tasks.schemas import RecordNotification, SendOrderConfirmation
from common_tasks.tasks import SEND_ORDER_CONFIRMATION, send_record_notification
from notification_service.channels import NotificationChannel, TransientChannelError, at_most
from notification_service.ledger import DeliveryLedger, new_attempt
from notification_service.settings import NotificationSettings

# Worth another try: the channel said so, or its connection failed or timed out.
TRANSIENT_DELIVERY_ERRORS = (TransientChannelError, ConnectionError, TimeoutError)


def register_notification_tasks(
    app: Celery, settings: NotificationSettings, ledger: DeliveryLedger, channel: NotificationChannel
) -> None:
    def report(order_id: str, outcome: str, detail: str = "") -> None:
        """Tell the orders side the outcome, with the ledger's delivery count."""
        deliveries = ledger.delivered(order_id)
        payload = RecordNotification(order_id=order_id, outcome=outcome, detail=detail, deliveries=deliveries)
        send_record_notification(app, payload)

    # One attempt: the channel's call (its own timeout), then the record of its outcome; the pool
    # process is killed at the hard limit, and the claim expires with it.
    @contract_task(app, SEND_ORDER_CONFIRMATION, time_limit=settings.delivery_time_limit)
    def send_order_confirmation(self: Task, confirmation: SendOrderConfirmation) -> str | Outcome:
        order_id = confirmation.order_id
        token = new_attempt()
        claim = ledger.claim(
            order_id, token, settings.delivery_claim_seconds, settings.NOTIFICATION_MAX_ABANDONED_ATTEMPTS
        )
        if claim == "delivered":
            # Delivered before (this is a redelivery): only make sure the outcome gets recorded.
            report(order_id, "sent")
            return f"order {order_id}: confirmation delivered before, outcome reported again"
        if claim == "failed":
            report(order_id, "failed", "the channel gave up earlier")
            return f"order {order_id}: confirmation failed before, outcome reported again"
        if claim == "busy":
            # Another attempt holds the claim: it reports the outcome, or, if it never ends, the
            # order's lease brings the confirmation back once the claim has expired.
            return f"order {order_id}: another attempt holds the confirmation's claim; this copy dropped"
        if claim == "abandoned":
            reason = f"{settings.NOTIFICATION_MAX_ABANDONED_ATTEMPTS} attempts died before an outcome"
            ledger.record_failure(order_id, token)
            report(order_id, "failed", reason)
            return Outcome(f"order {order_id}: confirmation failed: {reason}", logging.ERROR)
        try:
            # The channel's own timeout, and a bound one second later in case it ignores it.
            with at_most(settings.delivery_timeout + 1):
                receipt = channel.send(confirmation, idempotency_key=order_id, timeout=settings.delivery_timeout)
        except TRANSIENT_DELIVERY_ERRORS as error:
            transient = summary(error)
        except Exception as error:  # noqa: BLE001 - any other channel error is permanent
            ledger.record_failure(order_id, token)
            report(order_id, "failed", "the channel refused the confirmation")
            return Outcome(f"order {order_id}: confirmation failed permanently: {summary(error)}", logging.ERROR)
        else:
            ledger.record_delivery(order_id, token)  # also frees the claim
            report(order_id, "sent")
            return f"confirmation for order {order_id} delivered {receipt or ''}".rstrip()
        retries = self.request.retries
        if retries >= settings.NOTIFICATION_MAX_RETRIES:
            ledger.record_failure(order_id, token)
            report(order_id, "failed", f"gave up after {retries} retries")
            return Outcome(f"order {order_id}: confirmation failed after {retries} retries: {transient}", logging.ERROR)
        ledger.release(order_id, token)
        backoff = settings.NOTIFICATION_RETRY_BACKOFF_SECONDS
        countdown = backoff_seconds(backoff, retries, settings.longest_retry_countdown)
        # The retry is this attempt's one line: "retry <n> in <countdown>s: <error>".
        return retry_later(self, transient, countdown, settings.NOTIFICATION_MAX_RETRIES)
