"""The bodies the HTTP API answers with, as pydantic models.

The handlers build their JSON from these models and `order_service.openapi` derives the document's
response schemas from the same models, so the two cannot drift apart. (The request body is
`common_tasks.schemas.OrderRequest`, the model that validates it.)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from common_tasks.schemas import OrderId
from order_store.store import NotificationState, OrderRecord, OrderStatus

# What the order store keeps as the total: a decimal string with two places ("19.98").
DecimalString = Annotated[str, StringConstraints(pattern=r"^[0-9]+\.[0-9]{2}$")]


class _Body(BaseModel):
    # A key the document does not name is a bug, in the handler or in the document.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class FieldError(_Body):
    """One validation error of the order: where it is, and what is wrong."""

    loc: list[str | int] = Field(description="path to the offending value, e.g. ['items', 0, 'quantity']")
    msg: str
    type: str = Field(description="pydantic's error type, e.g. 'greater_than_equal'")


class ErrorBody(_Body):
    """Every error the API answers with."""

    error: str = Field(description="a stable machine-readable code, e.g. 'invalid_order'")
    message: str = Field(description="for humans")
    # Only for 422; left out of the body (not null) otherwise, so the schema has neither null nor a default.
    details: list[FieldError] | SkipJsonSchema[None] = Field(
        default=None, description="422 only: what is invalid", json_schema_extra=_no_default
    )


class OrderAccepted(_Body):
    """`202` to `POST /orders`: the order is stored and its message queued."""

    order_id: OrderId
    status: Literal["accepted"] = "accepted"


class OrderView(_Body):
    """`GET /orders/{order_id}`: the API's view of an order record."""

    order_id: OrderId
    status: OrderStatus
    total: DecimalString | None = Field(description="set when the worker priced the order")
    notification: NotificationState
    notifications_sent: int = Field(ge=0, description="confirmations the notification channel delivered")
    worker: str | None = Field(description="the Celery node that processed the order")
    failure: str | None
    created_at: float = Field(description="Unix time")
    updated_at: float = Field(description="Unix time")

    @classmethod
    def of(cls, record: OrderRecord) -> OrderView:
        return cls(
            order_id=record.order_id,
            status=record.status,
            total=record.total,
            notification=record.notification,
            notifications_sent=record.notifications_sent,
            worker=record.worker,
            failure=record.failure,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class Health(_Body):
    status: Literal["ok"] = "ok"


class Ready(_Body):
    status: Literal["ready"] = "ready"
