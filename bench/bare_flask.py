"""Baseline HTTP app: `POST /orders` doing one `send_task` (result ignored) and nothing else.

It runs under the project's own gunicorn application class (same workers, connections, worker class,
timeouts, log level: only `load()` differs), configured by the same environment variables
(HOST, PORT, WEB_CONCURRENCY, WEB_CONNECTIONS, CELERY_BROKER_URL). The task it sends is the first hop of
the bare chain (bench/bare_chain.py), so with the bare chain's two workers running it is the whole
end-to-end baseline; alone, it is the accept-path baseline. Run: `python -m bench.bare_flask`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Flask, Response, request

from common_tasks.config import load_settings
from common_tasks.tasks import PROCESS_ORDER
from order_service.main import OrderServiceServer
from order_service.settings import OrderServiceSettings


def create_bare_app() -> Flask:
    from bench import bare_chain

    app = Flask("bare_flask")

    @app.post("/orders")
    def create_order() -> Response:
        data = request.get_json()
        order_id = uuid.uuid4().hex
        bare_chain.send(PROCESS_ORDER, {"order_id": order_id, **data})
        body = json.dumps({"order_id": order_id, "status": "accepted"})
        return Response(body, status=202, mimetype="application/json", headers={"Location": f"/orders/{order_id}"})

    @app.get("/healthz")
    def healthz() -> Response:
        return Response('{"status": "ok"}', status=200, mimetype="application/json")

    return app


class BareServer(OrderServiceServer):
    """The order-service's gunicorn configuration, serving the bare app instead."""

    def load(self) -> Any:
        return create_bare_app()


def main() -> None:
    BareServer(load_settings(OrderServiceSettings)).run()


if __name__ == "__main__":
    main()
