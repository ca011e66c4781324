"""The worker's settings: every environment variable it reads, validated in one place."""

from __future__ import annotations

from pydantic import Field

from common_tasks.config import WorkerSettings


class OrderWorkerSettings(WorkerSettings):
    # Sleep this long in every order task: a stand-in for real work in demos and fault tests.
    WORKER_SIMULATED_WORK_SECONDS: float = Field(default=0.0, ge=0, le=3600)
    # The reconciler re-dispatches orders left unfinished this long (default: 2 x visibility timeout),
    # which recovers the rare message that a killed worker took but Redis never saw unacknowledged.
    RECONCILE_AFTER_SECONDS: float | None = Field(default=None, gt=0)
    RECONCILE_INTERVAL_SECONDS: float = Field(default=60.0, gt=0)

    @property
    def reconcile_after(self) -> float:
        return self.RECONCILE_AFTER_SECONDS or 2.0 * self.CELERY_VISIBILITY_TIMEOUT
