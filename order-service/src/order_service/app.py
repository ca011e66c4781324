"""The Flask app factory: the orders Blueprint on the backends built from the settings."""

from __future__ import annotations

import logging
import re
import uuid

from celery import Celery
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from common_tasks.celery_app import create_celery_app
from common_tasks.config import load_settings
from common_tasks.logs import log_context
from common_tasks.redis_state import redis_client
from order_service import metrics, openapi
from order_service.api import Backends, api, error_response
from order_service.auth import require_keys
from order_service.rate_limit import limit_rate
from order_service.settings import OrderServiceSettings
from order_store.store import OrderStore

logger = logging.getLogger("order_service")

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's request id is kept when it is a plain token; anything else gets a fresh one.
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(header: str | None) -> str:
    return header if header and VALID_REQUEST_ID.fullmatch(header) else uuid.uuid4().hex


def create_app(
    settings: OrderServiceSettings | None = None,
    celery_app: Celery | None = None,
    store: OrderStore | None = None,
) -> Flask:
    settings = settings or load_settings(OrderServiceSettings)
    app = Flask("order_service", static_folder=None)  # no /static route: the API serves JSON only
    # No MAX_CONTENT_LENGTH: Werkzeug would cut a chunked body at the limit without a word; the
    # route reads one byte past MAX_BODY_BYTES itself and answers 413.
    app.config.update(DEBUG=False, TESTING=False)
    app.extensions["order_service"] = backends = Backends(
        celery_app=celery_app or create_celery_app(settings, "order-service"),
        store=store or OrderStore.from_url(settings.order_store_url, settings.REDIS_SENTINEL_MASTER),
        broker=redis_client(settings.CELERY_BROKER_URL, settings.REDIS_SENTINEL_MASTER, socket_timeout=1),
        accept_replicas=settings.accept_replicas,
        accept_replica_timeout=settings.ORDER_ACCEPT_REPLICA_TIMEOUT_SECONDS,
    )
    app.register_blueprint(api)
    app.register_blueprint(openapi.blueprint)
    app.register_blueprint(metrics.blueprint)

    @app.before_request
    def bind_request_id() -> None:
        # Every log line of this request, and every task it sends, carries the request id.
        g.request_id = request_id_of(request.headers.get(REQUEST_ID_HEADER))
        g.log_context_token = log_context.set({"request_id": g.request_id})

    # After the request id, so that a 401 or 429 carries one too; keys first, so that a caller
    # without one never spends a key's budget.
    require_keys(app, settings.api_keys)
    limit_rate(app, settings.ORDER_RATE_LIMIT, backends.store.client, bool(settings.api_keys))

    @app.after_request
    def return_request_id(response: Response) -> Response:
        if "request_id" in g:
            response.headers[REQUEST_ID_HEADER] = g.request_id
        # Every answer is JSON about one caller's orders: never sniffed as anything else, never cached.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.teardown_request
    def unbind_request_id(_: BaseException | None) -> None:
        token = g.pop("log_context_token", None)
        if token is not None:
            log_context.reset(token)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        name = (error.name or "error").lower().replace(" ", "_")
        response = error_response(code, name, error.description or name)
        # The exception's own headers but its HTML body's type: a 405 must list the Allow-ed methods
        # (RFC 9110; Schemathesis' unsupported_method check found them missing).
        response.headers.extend((key, value) for key, value in error.get_headers() if key.lower() != "content-type")
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "unexpected error; see the service log")

    return app
