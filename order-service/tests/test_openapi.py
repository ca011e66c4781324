"""The OpenAPI document: valid OpenAPI 3.1, served as the code generates it, and naming exactly the
routes Flask serves. (Whether the running service answers as it says: test_schemathesis.py.)"""

from __future__ import annotations

import json

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import OpenAPIV31SpecValidator
from sample_orders import sample_order

from order_service.app import create_app
from order_service.models import ErrorBody, OrderAccepted, OrderView
from order_service.openapi import OPERATIONS, build_document
from order_service.settings import OrderServiceSettings
from stack_testkit import RedisServer


@pytest.fixture
def app(redis_server: RedisServer) -> Flask:
    settings = OrderServiceSettings(CELERY_BROKER_URL=redis_server.url(0), CELERY_RESULT_BACKEND=redis_server.url(1))
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_the_served_document_is_valid_openapi_3_1_and_what_the_code_generates(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    served = json.loads(response.data)
    assert served["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(served).validate()
    assert served == json.loads(json.dumps(build_document()))


def test_the_document_names_exactly_the_routes_flask_serves(app: Flask) -> None:
    def openapi_path(rule: str) -> str:
        return rule.replace("<", "{").replace(">", "}")

    served = {
        (method.lower(), openapi_path(rule.rule))
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")  # Flask's automatic ones
    }
    assert served == {(operation.method, operation.path) for operation in OPERATIONS}


def test_every_error_status_is_documented_with_the_error_body() -> None:
    document = build_document()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)


def test_the_answers_are_the_documented_models(client: FlaskClient) -> None:
    accepted = client.post("/orders", json=sample_order())
    order = OrderAccepted.model_validate_json(accepted.data)
    assert OrderView.model_validate_json(client.get(f"/orders/{order.order_id}").data).status == "accepted"
    invalid = ErrorBody.model_validate_json(client.post("/orders", json=sample_order(quantity=0)).data)
    assert invalid.details and invalid.details[0].loc == ["items", 0, "quantity"]
    # `details` is left out, not null, where there are none.
    assert "details" not in json.loads(client.get("/orders/" + "0" * 32).data)


def test_a_405_lists_the_allowed_methods(client: FlaskClient) -> None:
    # RFC 9110 requires Allow on a 405; the JSON error handler used to drop it (found by Schemathesis).
    response = client.delete("/orders")
    assert response.status_code == 405 and response.is_json
    assert set(response.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
