"""Bearer keys: every operation the OpenAPI document marks `authenticated` needs
`Authorization: Bearer <key>` with one of ORDER_API_KEYS (none configured: the API is open, which
the settings allow on a loopback HOST only)."""

from __future__ import annotations

import hashlib
import hmac
import re

from flask import Flask, Response, request

from order_service.api import error_response
from order_service.openapi import OPERATIONS

# Flask's rule `/orders/<order_id>` is OpenAPI's `/orders/{order_id}`.
FLASK_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
AUTHENTICATED_PATHS = frozenset(operation.path for operation in OPERATIONS if operation.authenticated)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="order-service"'}


def key_matches(presented: bytes, keys: tuple[bytes, ...]) -> bool:
    """Compared with every key in constant time, as digests of one length, so the answer's timing
    tells neither a key nor its length."""
    digest = hashlib.sha256(presented).digest()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(digest, hashlib.sha256(key).digest())
    return matched


def presented_key(header: str | None) -> bytes | None:
    scheme, _, key = (header or "").partition(" ")
    return key.strip().encode() if scheme.lower() == "bearer" and key.strip() else None


def guarded() -> bool:
    """Whether this request is to an operation that needs a key (and counts against a rate limit);
    an open operation, or no route at all (404/405 follow), is not."""
    rule = request.url_rule
    return rule is not None and FLASK_PARAMETER.sub(r"{\1}", rule.rule) in AUTHENTICATED_PATHS


def require_keys(app: Flask, keys: tuple[bytes, ...]) -> None:
    if not keys:
        return

    @app.before_request
    def authenticate() -> Response | None:
        if not guarded():
            return None
        key = presented_key(request.headers.get("Authorization"))
        if key is not None and key_matches(key, keys):
            return None
        response = error_response(401, "unauthorized", "send Authorization: Bearer <one of ORDER_API_KEYS>")
        response.headers.update(CHALLENGE)
        return response
