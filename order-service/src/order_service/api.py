"""The HTTP API as a Flask Blueprint: orders, health and readiness.

Every answer is JSON, errors included; no request ever sees a stack trace. An order is answered
202 only after its message reached the broker.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from flask import Blueprint, Response, current_app, request
from kombu.exceptions import KombuError, OperationalError
from pydantic import BaseModel, TypeAdapter, ValidationError

from common_tasks.celery_logs import summary
from common_tasks.logs import bind_context
from common_tasks.schemas import OrderId, OrderRequest, ProcessOrder
from common_tasks.tasks import send_process_order
from order_service.models import ErrorBody, Health, OrderAccepted, OrderView, Ready
from order_store.store import OrderStore

MAX_BODY_BYTES = 64 * 1024
BROKER_ERRORS = (redis.RedisError, OperationalError, KombuError, OSError)
ORDER_ID = TypeAdapter(OrderId)

logger = logging.getLogger("order_service")
api = Blueprint("orders", __name__)


@dataclass(frozen=True)
class Backends:
    """What the API talks to; `create_app` puts one in `app.extensions`."""

    celery_app: Celery
    store: OrderStore
    broker: redis.Redis
    # Replicas that must hold an order's record before it is accepted (ORDER_ACCEPT_REPLICAS).
    accept_replicas: int = 0
    accept_replica_timeout: float = 0.5


def backends() -> Backends:
    return current_app.extensions["order_service"]  # type: ignore[no-any-return]


def json_response(body: BaseModel, status: int, headers: dict[str, str] | None = None) -> Response:
    # Every body is one of order_service.models, the models the OpenAPI document describes; an
    # error's `details` is left out, not null, where there are none.
    text = body.model_dump_json(exclude_unset=isinstance(body, ErrorBody))
    return Response(text, status=status, mimetype="application/json", headers=headers)


def error_response(status: int, error: str, message: str, **extra: Any) -> Response:
    return json_response(ErrorBody(error=error, message=message, **extra), status)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(body: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity; raises ValueError with a short reason."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ValueError("body is not valid UTF-8") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except ValueError as error:
        raise ValueError(f"malformed JSON: {str(error)[:200]}") from None


def validation_errors(error: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's error list without echoing the (possibly huge) input back."""
    return [
        {"loc": list(item["loc"]), "msg": item["msg"], "type": item["type"]}
        for item in error.errors(include_url=False, include_input=False, include_context=False)
    ]


@api.get("/healthz")
def healthz() -> Response:
    return json_response(Health(), 200)


@api.get("/readyz")
def readyz() -> Response:
    try:
        backends().broker.ping()
        backends().store.ping()
    except redis.RedisError as error:
        # The detail (hosts, ports) goes to the log, not to whoever asks.
        logger.warning("not ready: Redis is not reachable: %s", error)
        return error_response(503, "broker_unavailable", "Redis is not reachable")
    return json_response(Ready(), 200)


@api.post("/orders")
def create_order() -> Response:
    if request.mimetype != "application/json":
        return error_response(415, "unsupported_media_type", "send the order as application/json")
    too_large = error_response(413, "request_entity_too_large", f"the body must be at most {MAX_BODY_BYTES} bytes")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return too_large
    # One byte past the limit tells a body that is too large from one that fits, whether it came
    # with a Content-Length or chunked (where no length is known up front).
    body = request.stream.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return too_large
    try:
        data = parse_json_body(body)
    except ValueError as error:
        return error_response(400, "malformed_json", str(error))
    try:
        order = OrderRequest.model_validate(data)
    except ValidationError as error:
        return error_response(422, "invalid_order", "the order is not valid", details=validation_errors(error))

    store, celery_app = backends().store, backends().celery_app
    order_id = uuid.uuid4().hex
    bind_context(order_id=order_id)
    try:
        replicated = store.create(order_id, order, backends().accept_replicas, backends().accept_replica_timeout)
    except redis.RedisError as error:
        logger.warning("order rejected, store unavailable: %s", error)
        return error_response(503, "broker_unavailable", "orders cannot be accepted right now; retry later")
    if not replicated:
        # Not published yet, so deleting the record leaves nothing behind. The message itself needs
        # no replica: if a failover loses it, the order's lease brings it back (worker.reconciler).
        logger.warning("order %s rejected: no replica acknowledged it in time", order_id)
        try:
            store.delete(order_id)
        except redis.RedisError:
            pass  # as below
        return error_response(503, "broker_unavailable", "orders cannot be accepted right now; retry later")
    message = ProcessOrder.for_order(order_id, order)
    try:
        send_process_order(celery_app, message)
    except BROKER_ERRORS as error:
        # The order is stored with its lease, so it is accepted: the reconciler sends it when the
        # lease expires. A publish that reported failure may still have landed; deleting the order
        # now would leave that message without one (and a retrying client with two orders).
        logger.warning("order %s accepted, its message left to its lease: %s", order_id, summary(error))
    else:
        logger.info("order %s accepted: %d item(s)", order_id, len(order.items))
    location = f"/orders/{order_id}"
    return json_response(OrderAccepted(order_id=order_id), 202, headers={"Location": location})


@api.get("/orders/<order_id>")
def get_order(order_id: str) -> Response:
    try:
        ORDER_ID.validate_python(order_id)
    except ValidationError:
        return error_response(404, "not_found", "no such order")
    try:
        record = backends().store.get(order_id)
    except redis.RedisError:
        return error_response(503, "store_unavailable", "orders cannot be read right now; retry later")
    if record is None:
        return error_response(404, "not_found", "no such order")
    return json_response(OrderView.of(record), 200)
