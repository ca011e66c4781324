"""The API's OpenAPI 3.1 document, generated from the pydantic models that validate the requests
(`common_tasks.schemas`) and build the responses (`order_service.models`), served at `/openapi.json`.

The routes and their answers are one declarative table (`OPERATIONS`); the schemas all come from
pydantic (`models_json_schema`). A test checks the table against Flask's URL map, and Schemathesis
fuzzes the running service against the document (tests/test_schemathesis.py).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from common_tasks.schemas import OrderId, OrderRequest
from order_service.api import MAX_BODY_BYTES
from order_service.models import ErrorBody, Health, OrderAccepted, OrderView, Ready

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{model}"
JSON = "application/json"
SECURITY_SCHEME = "apiKey"
# What prometheus_client answers with (exposition.choose_encoder): its text format, or OpenMetrics
# when the scraper asks for it.
METRICS_MEDIA_TYPES = ("text/plain", "application/openmetrics-text")


@dataclass(frozen=True)
class Answer:
    status: int
    description: str
    body: type[BaseModel] | None = None
    # A body that is no model: (media type, JSON schema) pairs.
    other_content: tuple[tuple[str, dict[str, Any]], ...] = ()
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # OpenAPI's template form: /orders/{order_id}
    operation_id: str
    summary: str
    answers: tuple[Answer, ...]
    request_body: type[BaseModel] | None = None
    # Path parameters: name -> the type that validates it.
    path_parameters: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    # Needs `Authorization: Bearer <key>` when ORDER_API_KEYS is set (order_service.auth).
    authenticated: bool = False


def error(status: int, description: str) -> Answer:
    return Answer(status, description, ErrorBody)


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/orders",
        "createOrder",
        "Accept an order: store it and queue it for the worker",
        request_body=OrderRequest,
        answers=(
            Answer(
                202,
                "Accepted: stored, and its message reached the broker",
                OrderAccepted,
                headers={"Location": {"description": "/orders/{order_id}", "schema": {"type": "string"}}},
            ),
            error(400, "The body is not JSON (malformed, not UTF-8, NaN/Infinity, nested too deeply)"),
            error(413, f"The body is over {MAX_BODY_BYTES} bytes"),
            error(415, "The body is not application/json"),
            error(422, "The JSON is not a valid order; `details` lists what is wrong"),
            error(503, "Redis is unreachable: nothing was stored or queued; retry later"),
        ),
        tags=("orders",),
        authenticated=True,
    ),
    Operation(
        "get",
        "/orders/{order_id}",
        "getOrder",
        "Read an order's state",
        path_parameters={"order_id": OrderId},
        answers=(
            Answer(200, "The order", OrderView),
            error(404, "No such order (an id that is not 32 lowercase hex digits included)"),
            error(503, "The order store is unreachable; retry later"),
        ),
        tags=("orders",),
        authenticated=True,
    ),
    Operation(
        "get",
        "/healthz",
        "healthz",
        "Liveness: the process serves (no broker call)",
        answers=(Answer(200, "Serving", Health),),
        tags=("operations",),
    ),
    Operation(
        "get",
        "/readyz",
        "readyz",
        "Readiness: Redis answers",
        answers=(Answer(200, "Ready", Ready), error(503, "Redis is unreachable")),
        tags=("operations",),
    ),
    Operation(
        "get",
        "/openapi.json",
        "openapi",
        "This document",
        answers=(Answer(200, "The OpenAPI document", other_content=((JSON, {"type": "object"}),)),),
        tags=("operations",),
    ),
    Operation(
        "get",
        "/metrics",
        "metrics",
        "Prometheus metrics of all the service's worker processes",
        answers=(
            Answer(
                200,
                "Prometheus text format, or OpenMetrics when asked for",
                other_content=tuple((media_type, {"type": "string"}) for media_type in METRICS_MEDIA_TYPES),
            ),
        ),
        tags=("operations",),
    ),
)


def _schemas() -> tuple[dict[tuple[type[BaseModel], JsonSchemaMode], Any], dict[str, Any]]:
    """Every model's schema under components/schemas: requests as validated, responses as serialized."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for operation in OPERATIONS:
        if operation.request_body is not None:
            models.append((operation.request_body, "validation"))
        models.extend((answer.body, "serialization") for answer in operation.answers if answer.body is not None)
    refs, definitions = models_json_schema(list(dict.fromkeys(models)), ref_template=REF_TEMPLATE)
    return refs, definitions.get("$defs", {})


def _operation(operation: Operation, refs: dict[tuple[type[BaseModel], JsonSchemaMode], Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    answers = operation.answers
    if operation.authenticated:
        answers = (
            *answers,
            error(401, "No key, or not one of ORDER_API_KEYS (when that is set)"),
            Answer(
                429,
                "More requests than ORDER_RATE_LIMIT allows this caller",
                ErrorBody,
                headers={
                    "Retry-After": {"description": "Seconds until a retry may pass", "schema": {"type": "integer"}}
                },
            ),
        )
    for answer in sorted(answers, key=lambda answer: answer.status):
        response: dict[str, Any] = {"description": answer.description}
        content = {JSON: {"schema": refs[(answer.body, "serialization")]}} if answer.body is not None else {}
        content.update({media_type: {"schema": schema} for media_type, schema in answer.other_content})
        if content:
            response["content"] = content
        if answer.headers:
            response["headers"] = answer.headers
        responses[str(answer.status)] = response
    document: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": list(operation.tags),
        "responses": responses,
    }
    if operation.path_parameters:
        document["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": TypeAdapter(annotation).json_schema()}
            for name, annotation in operation.path_parameters.items()
        ]
    if operation.authenticated:
        document["security"] = [{SECURITY_SCHEME: []}]
    if operation.request_body is not None:
        schema = refs[(operation.request_body, "validation")]
        document["requestBody"] = {"required": True, "content": {JSON: {"schema": schema}}}
    return document


@functools.cache
def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API (built once per process)."""
    refs, schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method] = _operation(operation, refs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "order-service",
            "version": "1",
            "description": "Accepts orders and queues them for the worker. Every error is a JSON ErrorBody; "
            "an unknown path answers 404 and a method a path does not have 405 (with Allow), both as ErrorBody.",
        },
        "tags": [
            {"name": "orders", "description": "Placing and reading orders"},
            {"name": "operations", "description": "Probes, metrics and this document"},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of ORDER_API_KEYS; a service without keys (loopback only) needs none",
                }
            },
        },
    }


@functools.cache
def document_json() -> str:
    return json.dumps(build_document(), indent=1)


blueprint = Blueprint("openapi", __name__)


@blueprint.get("/openapi.json")
def openapi_json() -> Response:
    return Response(document_json(), 200, mimetype=JSON)
