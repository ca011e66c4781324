"""Hostile HTTP input: every answer is a JSON 4xx (or 202 exactly when the order is valid), never a 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sample_orders import sample_order

from common_tasks.schemas import OrderRequest
from stack_testkit import http_request, report_figure

GENERATED_CASES = 1200
CLIENT_ERRORS = {400, 413, 415, 422}
JSON = {"Content-Type": "application/json"}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
)
hostile_numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["1", "0.001", "-0", "1e400", "NaN", "", "١٢", "9" * 400]),
    st.booleans(),
    st.none(),
)
items = st.fixed_dictionaries(
    {"sku": st.one_of(st.text(max_size=80), st.integers()), "quantity": hostile_numbers, "unit_price": hostile_numbers},
    optional={"note": json_values},
)
orders = st.fixed_dictionaries(
    {
        "customer_email": st.one_of(st.emails(), st.text(max_size=300), st.integers()),
        "items": st.one_of(st.lists(items, max_size=4), json_values, st.lists(items, min_size=101, max_size=102)),
    },
    optional={"extra": json_values},
)
valid_orders = st.fixed_dictionaries(
    {
        "customer_email": st.emails(),
        "items": st.lists(
            st.fixed_dictionaries(
                {
                    "sku": st.from_regex(r"\A[A-Z0-9][A-Z0-9-]{0,10}\Z"),
                    "quantity": st.integers(min_value=1, max_value=10_000),
                    "unit_price": st.decimals(min_value=0, max_value=10**6, places=2).map(str),
                }
            ),
            min_size=1,
            max_size=5,
        ),
    }
)
bodies = st.one_of(
    valid_orders.map(lambda order: json.dumps(order).encode()),
    orders.map(lambda order: json.dumps(order).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda text: text.encode("utf-8", "surrogatepass")),
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded", ""]
)


def is_valid_order(body: bytes) -> bool:
    try:
        OrderRequest.model_validate(json.loads(body))
    except (ValueError, ValidationError, RecursionError):
        return False
    return True


@pytest.fixture(scope="module")
def api(api_server: str) -> str:
    return api_server


def check_answer(api: str, body: bytes, content_type: str) -> int:
    headers = {"Content-Type": content_type} if content_type else {}
    response = http_request("POST", f"{api}/orders", body, headers=headers)
    assert response.status < 500, (response.status, body[:200])
    assert response.headers.get("Content-Type") == "application/json"
    payload = response.json()
    if response.status == 202:
        assert content_type.startswith("application/json") and is_valid_order(body), body[:200]
    else:
        assert response.status in CLIENT_ERRORS, response.status
        assert set(payload) >= {"error", "message"}
        if content_type.startswith("application/json") and is_valid_order(body):
            raise AssertionError(f"a valid order was refused: {response.status} {payload}")
    return response.status


statuses: dict[int, int] = {}


@settings(max_examples=GENERATED_CASES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(body=bodies, content_type=content_types)
def test_generated_hostile_bodies(api: str, body: bytes, content_type: str) -> None:
    status = check_answer(api, body, content_type)
    statuses[status] = statuses.get(status, 0) + 1


def test_generated_cases_left_the_service_up(api: str) -> None:
    tried = sum(statuses.values())
    report_figure(f"hostile HTTP input: {tried} generated cases, answers by status {dict(sorted(statuses.items()))}")
    assert tried >= 1000
    assert http_request("GET", f"{api}/healthz").status == 200


LONG = "x" * 10_000
HAND_WRITTEN: list[tuple[str, Any, int]] = [
    ("malformed JSON", b'{"items": [', 400),
    ("trailing garbage", json.dumps(sample_order()).encode() + b"}", 400),
    ("non-UTF-8 bytes", b'{"customer_email": "\xff\xfe"}', 400),
    ("Infinity literal", b'{"customer_email": Infinity}', 400),
    ("giant integer literal", b'{"x": ' + b"9" * 5000 + b"}", 400),
    ("body is a list", [sample_order()], 422),
    ("body is null", None, 422),
    ("quantity as string", sample_order(quantity="2"), 422),  # type: ignore[arg-type]
    ("quantity as float", sample_order(quantity=2.5), 422),  # type: ignore[arg-type]
    ("quantity as bool", sample_order(quantity=True), 422),
    ("zero quantity", sample_order(quantity=0), 422),
    ("negative quantity", sample_order(quantity=-3), 422),
    ("huge quantity", sample_order(quantity=10**40), 422),
    ("negative price", sample_order(unit_price="-0.01"), 422),
    ("price with 3 decimals", sample_order(unit_price="0.001"), 422),
    ("huge price", sample_order(unit_price="1" + "0" * 30), 422),
    ("price as object", sample_order(unit_price={"$gt": 0}), 422),  # type: ignore[arg-type]
    ("too many items", {**sample_order(), "items": sample_order()["items"] * 101}, 422),
    ("no items", {**sample_order(), "items": []}, 422),
    ("very long email", {**sample_order(), "customer_email": LONG + "@example.com"}, 422),
    ("very long sku", {**sample_order(), "items": [{"sku": LONG, "quantity": 1, "unit_price": "1"}]}, 422),
    ("unknown top-level field", {**sample_order(), "is_admin": True}, 422),
    ("unknown item field", {**sample_order(), "items": [{**sample_order()["items"][0], "discount": 1}]}, 422),
    ("oversize body", b'{"pad": "' + b"x" * 70_000 + b'"}', 413),
]


@pytest.mark.parametrize(("case", "body", "status"), HAND_WRITTEN, ids=[case for case, _, _ in HAND_WRITTEN])
def test_hand_written_hostile_cases(api: str, redis_client: redis.Redis, case: str, body: Any, status: int) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert check_answer(api, data, "application/json") == status
    assert redis_client.llen("orders") == 0, "nothing is queued for a refused order"


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x", ""])
def test_wrong_content_type(api: str, content_type: str) -> None:
    assert check_answer(api, json.dumps(sample_order()).encode(), content_type) == 415
