"""Dispatch through a real Redis broker: what lands on the queue is plain JSON, routed by contract."""

import base64
import json

import pytest
import redis

from common_tasks.celery_app import create_celery_app
from common_tasks.config import CommonSettings
from common_tasks.schemas import ProcessOrder, RecordNotification
from common_tasks.tasks import (
    CONTRACTS,
    NOTIFICATIONS_QUEUE,
    ORDERS_QUEUE,
    PROCESS_ORDER,
    dispatch,
    send_process_order,
    task_routes,
)
from stack_testkit import RedisServer

ORDER_ID = "ab" * 16


def test_every_contract_is_routed_to_a_declared_queue() -> None:
    routes = task_routes()
    assert {contract.name for contract in CONTRACTS} == set(routes)
    assert {route["queue"] for route in routes.values()} == {ORDERS_QUEUE, NOTIFICATIONS_QUEUE}


def test_dispatch_publishes_json_to_the_contract_queue(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    app = redis_server.celery_app()
    payload = ProcessOrder(
        order_id=ORDER_ID, customer_email="a@example.com", items=[{"sku": "A", "quantity": 1, "unit_price": "2.50"}]
    )
    task_id = send_process_order(app, payload)

    raw = redis_client.lpop(ORDERS_QUEUE)
    assert raw is not None
    envelope = json.loads(raw)
    assert envelope["content-type"] == "application/json"
    assert envelope["headers"]["task"] == PROCESS_ORDER.name
    assert envelope["headers"]["id"] == task_id
    args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
    assert args == []
    assert kwargs == {"payload": payload.model_dump(mode="json")}
    # Headers name the order, not the customer.
    assert envelope["headers"]["kwargsrepr"] == f"{{'payload': <ProcessOrder order_id={ORDER_ID}>}}"
    assert "a@example.com" not in json.dumps(envelope["headers"])
    # Ignoring results means nothing was written to the result backend.
    assert redis_server.client(1).dbsize() == 0


def test_dispatch_refuses_a_payload_of_the_wrong_contract() -> None:
    app = create_celery_app(CommonSettings(), "test")
    with pytest.raises(TypeError):
        dispatch(app, PROCESS_ORDER, RecordNotification(order_id=ORDER_ID, outcome="sent"))  # type: ignore[arg-type]
