"""Re-dispatches orders left unfinished for too long.

Acks-late does not cover one window of Celery's Redis transport: a message that a worker popped but
had not yet recorded as unacknowledged is lost if that worker is SIGKILLed. Every order is therefore
indexed in `orders:open` until its notification outcome is recorded, and this loop re-sends the next
step of any order idle longer than `RECONCILE_AFTER_SECONDS`. Safe because every task is idempotent.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery, bootsteps

from common_tasks.schemas import SendOrderConfirmation
from common_tasks.store import OrderStore
from common_tasks.tasks import send_order_confirmation, send_process_order

logger = logging.getLogger("worker.reconciler")


class Reconciler:
    def __init__(self, app: Celery, store: OrderStore, after: float, interval: float, owner: str) -> None:
        self.app = app
        self.store = store
        self.after = after
        self.interval = interval
        self.owner = owner
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reconcile_once(self) -> int:
        """One pass; returns how many orders were re-dispatched. One worker at a time runs it."""
        if not self.store.try_lock("reconciler", self.owner, int(self.interval)):
            return 0
        redispatched = 0
        now = time.time()
        for order_id in self.store.stale_open_orders(now - self.after):
            record = self.store.get(order_id)
            if record is None or record.status == "failed" or record.notification != "pending":
                self.store.forget_open(order_id)
                continue
            if record.status in ("accepted", "processing"):
                send_process_order(self.app, record.process_payload())
            else:
                confirmation = SendOrderConfirmation(
                    order_id=order_id, customer_email=record.customer_email, total=record.total
                )
                send_order_confirmation(self.app, confirmation)
            self.store.mark_redispatched(order_id)
            redispatched += 1
            logger.warning(
                "reconciler: re-dispatched order %s (status %s, idle %.0fs)",
                order_id,
                record.status,
                now - record.updated_at,
            )
        return redispatched

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.reconcile_once()
            except Exception as error:  # noqa: BLE001 - the loop must outlive a Redis outage
                logger.warning("reconciler: pass skipped: %s", error)

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
            owner = getattr(worker, "hostname", "worker")
            self.reconciler = Reconciler(app, store, after, interval, owner)
            self.reconciler.start()

        def stop(self, worker: object) -> None:
            if self.reconciler is not None:
                self.reconciler.stop()

    app.steps["worker"].add(ReconcilerStep)
