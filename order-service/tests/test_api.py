"""The `order-service` console script (gunicorn) over real HTTP, with a real Redis and no worker."""

from __future__ import annotations

import base64
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sample_orders import sample_order

from common_tasks.tasks import PROCESS_ORDER
from stack_testkit import RedisServer, ServiceLauncher, http_request, report_figure

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def api(api_server: str, redis_client: redis.Redis) -> str:
    """The module's order-service, with Redis emptied before each test."""
    return api_server


def assert_json_error(response, status: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    assert response.status == status, response.body
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert isinstance(body["error"], str) and isinstance(body["message"], str)
    assert b"Traceback" not in response.body
    return body


def test_accepted_order_is_queued_and_readable(api: str, redis_client: redis.Redis) -> None:
    response = http_request("POST", f"{api}/orders", sample_order(quantity=3, unit_price="1.50"))
    assert response.status == 202
    body = response.json()
    assert body["status"] == "accepted"
    assert response.headers["Location"] == f"/orders/{body['order_id']}"

    [raw] = redis_client.lrange("orders", 0, -1)
    message = json.loads(raw)
    assert message["headers"]["task"] == PROCESS_ORDER.name
    _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert kwargs["payload"]["order_id"] == body["order_id"]

    view = http_request("GET", f"{api}{response.headers['Location']}").json()
    assert view["status"] == "accepted" and view["notification"] == "pending" and view["total"] is None


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b'{"customer_email": ', JSON, 400),
        (b"\xff\xfe\x00garbage", JSON, 400),
        (b'{"customer_email": NaN}', JSON, 400),
        (json.dumps(sample_order()).encode(), {"Content-Type": "text/plain"}, 415),
        (json.dumps(sample_order()).encode(), {}, 415),
        (json.dumps({**sample_order(), "extra": 1}).encode(), JSON, 422),
        (json.dumps(sample_order(quantity=0)).encode(), JSON, 422),
        (json.dumps(sample_order(unit_price="-1")).encode(), JSON, 422),
        (b"[]", JSON, 422),
        (b'"text"', JSON, 422),
        (b"x" * (64 * 1024 + 1), JSON, 413),
    ],
)
def test_bad_requests_get_json_errors(api: str, body: bytes, headers: dict[str, str], status: int) -> None:
    assert_json_error(http_request("POST", f"{api}/orders", body, headers=headers), status)


@pytest.mark.parametrize("depth", [100, 5_000, 30_000])
def test_deep_nesting_is_a_client_error(api: str, depth: int) -> None:
    # Python's JSON parser gives up at a depth that differs between versions (400); a parsed but
    # nested body is not an order (422). Either way it is a JSON 4xx and the service stays up.
    response = http_request("POST", f"{api}/orders", b"[" * depth + b"]" * depth, headers=JSON)
    assert response.status in (400, 422)
    assert_json_error(response, response.status)
    assert http_request("GET", f"{api}/healthz").status == 200


def test_validation_errors_list_what_is_wrong(api: str) -> None:
    response = http_request("POST", f"{api}/orders", sample_order(quantity=-5))
    body = assert_json_error(response, 422)
    [detail] = body["details"]  # type: ignore[misc]
    assert detail["loc"] == ["items", 0, "quantity"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/orders/" + "f" * 32, 404),
        ("GET", "/orders/not-an-id", 404),
        ("GET", "/nowhere", 404),
        ("DELETE", "/orders", 405),
    ],
)
def test_unknown_resources(api: str, method: str, path: str, status: int) -> None:
    assert_json_error(http_request(method, f"{api}{path}"), status)


def test_health_and_readiness(api: str) -> None:
    assert http_request("GET", f"{api}/healthz").json() == {"status": "ok"}
    assert http_request("GET", f"{api}/readyz").json() == {"status": "ready"}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start(appendonly=True)
    yield server
    server.stop()


def test_broker_down_answers_503_fast_and_recovers(services: ServiceLauncher, own_redis: RedisServer) -> None:
    _, api = services.start_http(
        "order-service", CELERY_BROKER_URL=own_redis.url(0), CELERY_RESULT_BACKEND=own_redis.url(1)
    )
    assert http_request("POST", f"{api}/orders", sample_order()).status == 202
    own_redis.stop()

    latencies = []
    for _ in range(5):
        started = time.monotonic()
        response = http_request("POST", f"{api}/orders", sample_order())
        latencies.append(time.monotonic() - started)
        assert_json_error(response, 503)
    report_figure(
        f"POST /orders with Redis down: 503 in at most {max(latencies) * 1000:.0f} ms ({len(latencies)} posts)"
    )
    assert max(latencies) < 2.0
    assert_json_error(http_request("GET", f"{api}/readyz"), 503)
    assert http_request("GET", f"{api}/healthz").status == 200

    own_redis.start()
    response = http_request("POST", f"{api}/orders", sample_order())
    assert response.status == 202
    # Only the two orders answered 202 exist (AOF kept the first): the 503s left nothing behind.
    assert own_redis.client().llen("orders") == 2
    assert len(own_redis.client().keys("order:*")) == 2


def test_debug_is_off_whatever_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from order_service.app import create_app
    from order_service.settings import OrderServiceSettings

    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app(OrderServiceSettings())
    assert app.debug is False and app.config["DEBUG"] is False


def post_chunked(api: str, chunks: list[bytes]) -> tuple[int, dict[str, object]]:
    """POST /orders with `Transfer-Encoding: chunked` (no Content-Length), as streaming clients do."""
    host, port = api.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("POST", "/orders", body=iter(chunks), headers=JSON, encode_chunked=True)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_the_body_limit_holds_for_chunked_bodies(api: str, redis_client: redis.Redis) -> None:
    order = json.dumps(sample_order()).encode()
    assert post_chunked(api, [order[:10], order[10:]])[0] == 202
    padded = json.dumps({**sample_order(), "pad": "x" * 70_000}).encode()
    status, body = post_chunked(api, [padded[i : i + 8192] for i in range(0, len(padded), 8192)])
    assert (status, body["error"]) == (413, "request_entity_too_large")
    exactly_over = b" " * (64 * 1024) + order  # the JSON starts past the limit: still too large, not malformed
    assert_json_error(http_request("POST", f"{api}/orders", exactly_over, headers=JSON), 413)
    assert post_chunked(api, [exactly_over])[0] == 413
    assert redis_client.llen("orders") == 1


def test_a_full_redis_gets_503_not_a_crash(api: str, redis_client: redis.Redis) -> None:
    """Redis at maxmemory with `noeviction` (as compose and Kubernetes run it) refuses writes: the
    API answers 503 and serves again once there is room."""
    redis_client.config_set("maxmemory", "1")
    try:
        refused = http_request("POST", f"{api}/orders", sample_order())
        assert refused.status == 503 and refused.json()["error"] == "broker_unavailable", refused.body
        assert http_request("GET", f"{api}/healthz").status == 200
    finally:
        redis_client.config_set("maxmemory", "0")
    assert http_request("POST", f"{api}/orders", sample_order()).status == 202
