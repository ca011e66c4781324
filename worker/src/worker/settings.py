"""The worker's settings: every environment variable it reads, validated in one place."""

from __future__ import annotations

from pydantic import Field

from common_tasks.config import WorkerSettings
from order_store.settings import OrderStoreSettings


class OrderWorkerSettings(WorkerSettings, OrderStoreSettings):
    # Sleep this long in every order task: a stand-in for real work in demos and fault tests.
    WORKER_SIMULATED_WORK_SECONDS: float = Field(default=0.0, ge=0, le=3600)
    # The reconciler re-sends the next step of an order idle this long whose message is in no queue
    # and not unacknowledged: the rare message that a killed worker took but Redis never saw
    # unacknowledged. Orders that a message still names are never re-sent, so the delay only bounds
    # how long such a loss goes unnoticed; a shorter one costs a scan of the queues more often.
    RECONCILE_AFTER_SECONDS: float = Field(default=120.0, gt=0)
    RECONCILE_INTERVAL_SECONDS: float = Field(default=30.0, gt=0)
