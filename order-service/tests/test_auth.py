"""Bearer keys (ORDER_API_KEYS) on the real service: the `order-service` console script (gunicorn)
on a real Redis. Without keys it serves on loopback only, and says so once."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from sample_orders import sample_order

from order_service.auth import key_matches, presented_key
from stack_testkit import RedisServer, ServiceLauncher, console_script, http_request

KEYS = ("k" * 16 + "-first", "0123456789abcdef0123")


@pytest.fixture(scope="module")
def keyed_api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """An order-service with two keys; yields its base URL and its log."""
    launcher = ServiceLauncher(redis_server, tmp_path_factory.mktemp("order-service-keys"))
    service, base_url = launcher.start_http("order-service", ORDER_API_KEYS=f" {KEYS[0]} ,{KEYS[1]}")
    yield base_url, str(service.log_path)
    launcher.stop_all()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_orders_need_one_of_the_keys(keyed_api: tuple[str, str]) -> None:
    api, _ = keyed_api
    for headers in ({}, bearer("not-a-key-of-this-service"), {"Authorization": f"Basic {KEYS[0]}"}):
        refused = http_request("POST", f"{api}/orders", sample_order(), headers=headers)
        assert refused.status == 401, refused.body
        assert refused.json()["error"] == "unauthorized"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert refused.headers["X-Request-ID"]
    for key in KEYS:
        accepted = http_request("POST", f"{api}/orders", sample_order(), headers=bearer(key))
        assert accepted.status == 202, accepted.body
        location = accepted.headers["Location"]
        assert http_request("GET", f"{api}{location}").status == 401
        assert http_request("GET", f"{api}{location}", headers=bearer(key)).status == 200


def test_probes_metrics_and_the_document_stay_open(keyed_api: tuple[str, str]) -> None:
    api, _ = keyed_api
    for path in ("/healthz", "/readyz", "/openapi.json", "/metrics"):
        assert http_request("GET", f"{api}{path}").status == 200, path
    assert http_request("GET", f"{api}/no-such-path").status == 404


def test_no_key_reaches_the_log(keyed_api: tuple[str, str]) -> None:
    api, log_path = keyed_api
    http_request("POST", f"{api}/orders", sample_order(), headers=bearer("a-wrong-key-0123456789"))
    http_request("POST", f"{api}/orders", sample_order(), headers=bearer(KEYS[0]))
    log = open(log_path).read()
    assert "order" in log and KEYS[0] not in log and KEYS[1] not in log and "a-wrong-key" not in log


def run_order_service(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("order-service")],
        env={**os.environ, "PORT": "1", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_without_keys_it_refuses_to_serve_beyond_loopback() -> None:
    result = run_order_service(HOST="0.0.0.0", ORDER_API_KEYS="")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "ORDER_API_KEYS is empty and HOST=0.0.0.0" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_short_key_is_refused_without_being_echoed() -> None:
    result = run_order_service(HOST="127.0.0.1", ORDER_API_KEYS="short-secret")
    assert result.returncode == 2 and "16+ ASCII characters" in result.stderr
    assert "short-secret" not in result.stderr


def test_without_keys_on_loopback_it_serves_and_warns_once(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    launcher = ServiceLauncher(redis_server, tmp_path_factory.mktemp("order-service-open"))
    try:
        service, api = launcher.start_http("order-service")
        assert http_request("POST", f"{api}/orders", sample_order()).status == 202
        assert service.log().count("ORDER_API_KEYS is empty") == 1
    finally:
        launcher.stop_all()


def test_the_key_comparison() -> None:
    keys = (b"0123456789abcdef", b"fedcba9876543210")
    assert key_matches(b"fedcba9876543210", keys)
    assert not key_matches(b"0123456789abcdeF", keys) and not key_matches(b"", keys)
    assert presented_key("Bearer  abc ") == b"abc" and presented_key("bearer abc") == b"abc"
    assert presented_key("Basic abc") is None and presented_key(None) is None and presented_key("Bearer ") is None
