"""The worker's settings: every environment variable it reads, validated in one place."""

from __future__ import annotations

from pydantic import Field

from common_tasks.config import WorkerSettings
from order_store.settings import OrderStoreSettings


class OrderWorkerSettings(WorkerSettings, OrderStoreSettings):
    # Sleep this long in every order task: a stand-in for real work in demos and fault tests.
    WORKER_SIMULATED_WORK_SECONDS: float = Field(default=0.0, ge=0, le=3600)
    # An order's lease: the reconciler re-sends the next step of an order whose step has not moved
    # for this long, checking every RECONCILE_INTERVAL_SECONDS (worker.reconciler). It bounds how
    # long an order waits after any fault; an order still queued that long is sent twice (the copy
    # finds its step done).
    RECONCILE_AFTER_SECONDS: float = Field(default=120.0, gt=0)
    RECONCILE_INTERVAL_SECONDS: float = Field(default=10.0, gt=0)
    # Attempts at processing one order (each a delivery of its message that started it) before it is
    # failed: a message that kills whatever runs it is not tried forever.
    ORDER_MAX_ATTEMPTS: int = Field(default=5, ge=1, le=100)
