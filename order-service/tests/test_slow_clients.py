"""Slow clients cannot stall the API: the `order-service` console script (gunicorn) with 50
connections that sent their headers and 4 bytes of a 1,000-byte body, and then nothing."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from sample_orders import sample_order

from stack_testkit import http_request, report_figure

SLOW_CLIENTS = 50


@pytest.fixture
def slow_clients(api_server: str) -> Iterator[list[socket.socket]]:
    address = urlsplit(api_server)
    sockets = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection((address.hostname, address.port), timeout=5)
            sock.sendall(
                b"POST /orders HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"cu'
            )
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_health_and_orders_answer_while_slow_clients_hold_connections(
    api_server: str, slow_clients: list[socket.socket]
) -> None:
    time.sleep(0.5)  # every slow request has reached the server and holds whatever it holds
    slowest = 0.0
    for _ in range(5):
        started = time.monotonic()
        response = http_request("GET", f"{api_server}/healthz", timeout=1)
        slowest = max(slowest, time.monotonic() - started)
        assert response.status == 200
    assert http_request("POST", f"{api_server}/orders", sample_order(), timeout=5).status == 202
    report_figure(f"/healthz with {len(slow_clients)} slow clients connected: slowest of 5 in {slowest * 1000:.0f} ms")
