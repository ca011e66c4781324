"""The whole stack as real processes against a real Redis, for the cross-service tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common_tasks.testing import RedisServer, ServiceLauncher, ServiceProcess, http_request, sample_order, wait_until


@dataclass
class Stack:
    """worker + notification-service + order-service started from their console scripts."""

    launcher: ServiceLauncher
    redis_server: RedisServer
    api: str = ""
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def start(self, **env: str) -> Stack:
        self.processes["worker"] = self.launcher.start("worker", **env)
        self.processes["notification-service"] = self.launcher.start("notification-service", **env)
        self.processes["order-service"], self.api = self.launcher.start_order_service(**env)
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

        wait_until(all_finished, timeout, f"{len(pending)} of {len(order_ids)} orders never finished", 0.1)
        return [views[order_id] for order_id in order_ids]

    def audit(self, order_ids: list[str], timeout: float = 60) -> list[dict[str, Any]]:
        """Accepted = completed = notified, each exactly once (counting deliveries, not task states)."""
        views = self.wait_finished(order_ids, timeout)
        assert [v["status"] for v in views] == ["completed"] * len(order_ids)
        assert [v["notification"] for v in views] == ["sent"] * len(order_ids)
        assert [v["notifications_sent"] for v in views] == [1] * len(order_ids)
        return views
