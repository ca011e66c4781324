"""Re-sends the next step of every order whose lease expired.

Every open order holds a lease in the order store's index (`orders:open`, scored by the time its
current step last moved; order_store.store). A step that never ends, whatever the cause (a worker
killed with the message in hand, a message Celery dropped on a lost broker connection, a retry that
could not be published, a pool process killed at its time limit), leaves the lease to expire; this
loop, every `RECONCILE_INTERVAL_SECONDS`, reads only the expired leases (the index by time: a pass
costs what it finds), renews each (atomically, so that two workers never both re-send it) and sends
its next step again. It never looks at the broker: an order whose message still waits in a queue
when its lease expires is sent again, once per lease, and each copy finds the step done (every task
is idempotent per order_id).
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery, bootsteps

from common_tasks.celery_logs import summary
from common_tasks.schemas import ProcessOrder
from common_tasks.tasks import send_process_order
from order_store.store import OrderStore
from worker.tasks import send_confirmation

logger = logging.getLogger("worker.reconciler")


class Reconciler:
    def __init__(self, app: Celery, store: OrderStore, after: float, interval: float) -> None:
        self.app = app
        self.store = store
        self.after = after
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reconcile_once(self) -> int:
        """One pass; returns how many orders' next steps were re-sent."""
        redispatched = 0
        expired_before = time.time() - self.after
        for order_id in self.store.expired_leases(expired_before):
            record = self.store.get(order_id)
            if record is None or record.status == "failed" or record.notification != "pending":
                self.store.forget_open(order_id)
                continue
            if not self.store.renew_lease(order_id, expired_before):
                continue  # it moved meanwhile, or another worker's reconciler has taken it
            if record.status in ("accepted", "processing"):
                send_process_order(self.app, ProcessOrder.for_order(order_id, record.request()))
            else:
                send_confirmation(self.app, order_id, self.store.completion(order_id))
            redispatched += 1
            logger.warning(
                "reconciler: re-dispatched order %s (status %s, idle %.0fs)",
                order_id,
                record.status,
                time.time() - record.updated_at,
            )
        return redispatched

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.reconcile_once()
            except Exception as error:  # noqa: BLE001 - the loop must outlive a Redis outage
                logger.warning("reconciler: pass skipped: %s", summary(error))

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def install_reconciler(app: Celery, store: OrderStore, after: float, interval: float) -> None:
    class ReconcilerStep(bootsteps.StartStopStep):
        """Runs the reconciler thread in the worker's main process."""

        def __init__(self, parent: object, **kwargs: object) -> None:
            super().__init__(parent, **kwargs)
            self.reconciler: Reconciler | None = None

        def start(self, worker: object) -> None:
            self.reconciler = Reconciler(app, store, after, interval)
            self.reconciler.start()

        def stop(self, worker: object) -> None:
            if self.reconciler is not None:
                self.reconciler.stop()

    app.steps["worker"].add(ReconcilerStep)
