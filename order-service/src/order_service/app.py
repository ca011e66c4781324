"""The Flask app factory and the HTTP API.

Every answer is JSON, errors included; no request ever sees a stack trace. An order is answered
202 only after its message reached the broker.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import redis
from celery import Celery
from flask import Flask, Response, request
from kombu.exceptions import KombuError, OperationalError
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from common_tasks.celery_app import create_celery_app
from common_tasks.config import load_settings
from common_tasks.schemas import OrderRequest, ProcessOrder
from common_tasks.tasks import send_process_order
from order_service.settings import OrderServiceSettings
from order_store.store import OrderStore

MAX_BODY_BYTES = 64 * 1024
BROKER_ERRORS = (redis.RedisError, OperationalError, KombuError, OSError)
ORDER_ID_LENGTH = 32

logger = logging.getLogger("order_service")


def json_response(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)


def error_response(status: int, error: str, message: str, **extra: Any) -> Response:
    return json_response({"error": error, "message": message, **extra}, status)


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


def create_app(
    settings: OrderServiceSettings | None = None,
    celery_app: Celery | None = None,
    store: OrderStore | None = None,
) -> Flask:
    settings = settings or load_settings(OrderServiceSettings)
    celery_app = celery_app or create_celery_app(settings, "order-service")
    store = store or OrderStore.from_url(settings.order_store_url)
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=1, socket_timeout=1)

    app = Flask("order_service")
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, DEBUG=False, TESTING=False)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        name = (error.name or "error").lower().replace(" ", "_")
        return error_response(code, name, error.description or name)

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "unexpected error; see the service log")

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok"}, 200)

    @app.get("/readyz")
    def readyz() -> Response:
        try:
            broker.ping()
            store.ping()
        except redis.RedisError as error:
            return error_response(503, "broker_unavailable", f"Redis is not reachable: {error}")
        return json_response({"status": "ready"}, 200)

    @app.post("/orders")
    def create_order() -> Response:
        if request.mimetype != "application/json":
            return error_response(415, "unsupported_media_type", "send the order as application/json")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return error_response(413, "request_entity_too_large", f"the body must be at most {MAX_BODY_BYTES} bytes")
        try:
            data = parse_json_body(request.get_data(cache=False))
        except ValueError as error:
            return error_response(400, "malformed_json", str(error))
        try:
            order = OrderRequest.model_validate(data)
        except ValidationError as error:
            return error_response(422, "invalid_order", "the order is not valid", details=validation_errors(error))

        order_id = uuid.uuid4().hex
        try:
            store.create(order_id, order)
        except redis.RedisError as error:
            logger.warning("order rejected, store unavailable: %s", error)
            return error_response(503, "broker_unavailable", "orders cannot be accepted right now; retry later")
        message = ProcessOrder(order_id=order_id, customer_email=order.customer_email, items=order.items)
        try:
            send_process_order(celery_app, message)
        except BROKER_ERRORS as error:
            logger.warning("order %s rejected, broker unavailable: %s", order_id, error)
            try:
                store.delete(order_id)
            except redis.RedisError:
                pass  # the reconciler finishes it if it survives; the client was told to retry
            return error_response(503, "broker_unavailable", "orders cannot be accepted right now; retry later")
        location = f"/orders/{order_id}"
        return json_response({"order_id": order_id, "status": "accepted"}, 202, headers={"Location": location})

    @app.get("/orders/<order_id>")
    def get_order(order_id: str) -> Response:
        if len(order_id) != ORDER_ID_LENGTH or not all(c in "0123456789abcdef" for c in order_id):
            return error_response(404, "not_found", "no such order")
        try:
            record = store.get(order_id)
        except redis.RedisError:
            return error_response(503, "store_unavailable", "orders cannot be read right now; retry later")
        if record is None:
            return error_response(404, "not_found", "no such order")
        return json_response(record.public_view(), 200)

    return app
