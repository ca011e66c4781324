"""The fast tier: the Flask app in-process through Flask's test client, against a real Redis (the
orders land in its queue; nothing is mocked). The same routes through gunicorn: test_api.py."""

from __future__ import annotations

import json

import pytest
import redis
from flask.testing import FlaskClient
from sample_orders import sample_order

from common_tasks.tasks import ORDERS_QUEUE
from order_service.app import create_app
from order_service.settings import OrderServiceSettings
from stack_testkit import RedisServer, free_port


def settings_for(broker_url: str, results_url: str) -> OrderServiceSettings:
    return OrderServiceSettings(CELERY_BROKER_URL=broker_url, CELERY_RESULT_BACKEND=results_url)


@pytest.fixture
def client(redis_server: RedisServer, redis_client: redis.Redis) -> FlaskClient:
    return create_app(settings_for(redis_server.url(0), redis_server.url(1))).test_client()


def test_an_accepted_order_is_stored_and_queued(client: FlaskClient, redis_client: redis.Redis) -> None:
    response = client.post("/orders", json=sample_order(quantity=3, unit_price="1.50"))
    assert response.status_code == 202
    order_id = response.get_json()["order_id"]
    assert response.headers["Location"] == f"/orders/{order_id}"
    [raw] = redis_client.lrange(ORDERS_QUEUE, 0, -1)
    assert json.loads(raw)["headers"]["task"] == "orders.process" and order_id in raw

    view = client.get(f"/orders/{order_id}").get_json()
    assert (view["status"], view["notification"], view["notifications_sent"]) == ("accepted", "pending", 0)


@pytest.mark.parametrize(
    ("path", "status"),
    [("/orders/" + "0" * 32, 404), ("/orders/not-an-id", 404), ("/orders/" + "A" * 32, 404), ("/healthz", 200)],
)
def test_reads(client: FlaskClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status and response.is_json


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"{", "application/json", 400, "malformed_json"),
        (json.dumps(sample_order()).encode(), "text/plain", 415, "unsupported_media_type"),
        (json.dumps(sample_order(quantity=0)).encode(), "application/json", 422, "invalid_order"),
        (b"[" * 70_000, "application/json", 413, "request_entity_too_large"),
    ],
)
def test_bad_requests_get_a_json_error(
    client: FlaskClient, redis_client: redis.Redis, body: bytes, content_type: str, status: int, error: str
) -> None:
    response = client.post("/orders", data=body, content_type=content_type)
    assert (response.status_code, response.get_json()["error"]) == (status, error)
    assert redis_client.llen(ORDERS_QUEUE) == 0


def test_ready_only_while_redis_answers(client: FlaskClient) -> None:
    assert client.get("/readyz").status_code == 200
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    unreachable = create_app(settings_for(nothing_there, nothing_there)).test_client()
    response = unreachable.get("/readyz")
    assert response.status_code == 503 and response.get_json()["error"] == "broker_unavailable"
    # Where Redis is stays in the log: the answer names no host or port.
    assert nothing_there.split(":")[-1].split("/")[0] not in response.get_data(as_text=True)
    assert unreachable.post("/orders", json=sample_order()).status_code == 503


@pytest.mark.parametrize("path", ["/healthz", "/orders/" + "0" * 32, "/no-such-path"])
def test_every_answer_is_neither_sniffed_nor_cached(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
