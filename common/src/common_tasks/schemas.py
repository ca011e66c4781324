"""Pydantic v2 models: the HTTP request body and the payload of every task on the wire."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Bumped when a payload changes incompatibly; consumers reject any other version.
CONTRACT_VERSION = 1

MAX_ITEMS = 100
MAX_QUANTITY = 10_000
MAX_UNIT_PRICE = Decimal("1000000")
CENT = Decimal("0.01")

OrderId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"),
]
Sku = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]
UnitPrice = Annotated[Decimal, Field(ge=0, le=MAX_UNIT_PRICE, max_digits=12, decimal_places=2)]
Money = Annotated[Decimal, Field(ge=0, max_digits=20, decimal_places=2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderItem(_Strict):
    sku: Sku
    quantity: Quantity
    # A decimal string ("9.99") or a JSON number; money never passes through float arithmetic.
    unit_price: UnitPrice


class OrderRequest(_Strict):
    """Body of `POST /orders`."""

    customer_email: Email
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=MAX_ITEMS)]

    def total(self) -> Decimal:
        return order_total(self.items)


def order_total(items: list[OrderItem]) -> Decimal:
    return sum((item.unit_price * item.quantity for item in items), Decimal(0)).quantize(CENT, ROUND_HALF_UP)


class _Contract(_Strict):
    contract_version: Literal[1] = CONTRACT_VERSION


class ProcessOrder(_Contract):
    """Payload of `orders.process`: an accepted order to price and record."""

    order_id: OrderId
    customer_email: Email
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=MAX_ITEMS)]

    @classmethod
    def for_order(cls, order_id: str, order: OrderRequest) -> ProcessOrder:
        return cls(order_id=order_id, customer_email=order.customer_email, items=order.items)


class SendOrderConfirmation(_Contract):
    """Payload of `notifications.send_order_confirmation`."""

    order_id: OrderId
    customer_email: Email
    total: Money


class RecordNotification(_Contract):
    """Payload of `orders.record_notification`: what the notification channel did."""

    order_id: OrderId
    outcome: Literal["sent", "failed"]
    detail: Annotated[str, StringConstraints(max_length=500)] = ""
    # Confirmations the channel delivered so far (notification-service's ledger). Absent in messages
    # of earlier versions of the service: then 1 for `sent`, 0 for `failed`.
    deliveries: Annotated[int, Field(ge=0, le=1_000_000)] | None = None

    def delivery_count(self) -> int:
        if self.deliveries is not None:
            return self.deliveries
        return 1 if self.outcome == "sent" else 0
