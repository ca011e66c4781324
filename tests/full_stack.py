"""The whole stack as real processes against a real Redis, for the cross-service tests."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from stack_testkit import RedisServer, ServiceLauncher, ServiceProcess, http_request, wait_until

# Fast notification retries, so that the tests with a failing channel do not wait for the defaults.
# The tests post and poll from one address far faster than a caller may (the rate limit has tests
# of its own: order-service/tests/test_rate_limit.py).
STACK_ENV = {"NOTIFICATION_RETRY_BACKOFF_SECONDS": "0.2", "ORDER_RATE_LIMIT": "1000000/second"}


def sample_order(quantity: int = 2, unit_price: str = "9.99") -> dict[str, Any]:
    return {
        "customer_email": "buyer@example.com",
        "items": [{"sku": "SKU-1", "quantity": quantity, "unit_price": unit_price}],
    }


@dataclass
class Stack:
    """worker + notification-service + order-service started from their console scripts."""

    launcher: ServiceLauncher
    redis_server: RedisServer
    api: str = ""
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def start(self, **env: str) -> Stack:
        env = {**STACK_ENV, **env}
        self.processes["worker"] = self.launcher.start("worker", **env)
        self.processes["notification-service"] = self.launcher.start("notification-service", **env)
        self.processes["order-service"], self.api = self.launcher.start_http("order-service", **env)
        return self

    def post_order(self, order: dict[str, Any] | None = None) -> str:
        response = http_request("POST", f"{self.api}/orders", order or sample_order())
        assert response.status == 202, response.body
        return str(response.json()["order_id"])

    def order(self, order_id: str) -> dict[str, Any]:
        response = http_request("GET", f"{self.api}/orders/{order_id}")
        assert response.status == 200, response.body
        return dict(response.json())

    def wait_finished(self, order_ids: list[str], timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until every order is completed and its notification outcome recorded."""
        pending = set(order_ids)
        views: dict[str, dict[str, Any]] = {}

        def all_finished() -> bool:
            for order_id in list(pending):
                view = self.order(order_id)
                if view["status"] in ("completed", "failed") and view["notification"] != "pending":
                    views[order_id] = view
                    pending.discard(order_id)
            return not pending

        try:
            wait_until(all_finished, timeout, "orders never finished", 0.1)
        except AssertionError:
            states = Counter(f"{v['status']}/{v['notification']}" for v in map(self.order, sorted(pending)))
            raise AssertionError(
                f"{len(pending)} of {len(order_ids)} orders unfinished after {timeout:.0f}s: {dict(states)}; "
                f"e.g. {sorted(pending)[:3]}"
            ) from None
        return [views[order_id] for order_id in order_ids]

    def audit(self, order_ids: list[str], timeout: float = 60) -> list[dict[str, Any]]:
        """Accepted = completed = notified, each exactly once (counting deliveries, not task states)."""
        views = self.wait_finished(order_ids, timeout)
        assert [v["status"] for v in views] == ["completed"] * len(order_ids)
        assert [v["notification"] for v in views] == ["sent"] * len(order_ids)
        assert [v["notifications_sent"] for v in views] == [1] * len(order_ids)
        return views


class OrderLoad:
    """Posts orders at a steady rate from a thread until stopped; keeps every answer it got."""

    def __init__(self, api: str, rate: float, headers: dict[str, str] | None = None) -> None:
        self.api = api
        self.headers = headers or {}
        self.interval = 1.0 / rate
        self.accepted: list[str] = []
        self.statuses: Counter[int | str] = Counter()
        # (time.monotonic() when the answer came, status) of every request, in order.
        self.timeline: list[tuple[float, int | str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="order-load", daemon=True)

    def __enter__(self) -> OrderLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                response = http_request("POST", f"{self.api}/orders", sample_order(), self.headers, timeout=10)
            except OSError as error:  # the API itself unreachable: counted, never expected
                self.statuses[type(error).__name__] += 1
                self.timeline.append((time.monotonic(), type(error).__name__))
            else:
                self.statuses[response.status] += 1
                self.timeline.append((time.monotonic(), response.status))
                if response.status == 202:
                    self.accepted.append(str(response.json()["order_id"]))
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def unexpected(self) -> dict[int | str, int]:
        """Answers other than 202 (accepted) and 503 (Redis unreachable)."""
        return {status: count for status, count in self.statuses.items() if status not in (202, 503)}
