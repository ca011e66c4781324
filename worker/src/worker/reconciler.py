"""Re-dispatches orders whose next step has no message anywhere.

Acks-late does not cover one window of Celery's Redis transport: a message that a worker popped but
had not yet recorded as unacknowledged is lost if that worker is SIGKILLed. Every order is therefore
indexed in `orders:open` until its notification outcome is recorded, and this loop looks at the
orders idle longer than `RECONCILE_AFTER_SECONDS`: an order that a message still names, waiting in a
queue or held unacknowledged by a worker (Redis redelivers those itself after the visibility
timeout), is left alone; only a stranded one gets its next step re-sent, at most once per
`RECONCILE_AFTER_SECONDS`. So a backlog is never multiplied. Safe because every task is idempotent.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable

from celery import Celery, bootsteps

from common_tasks.schemas import ProcessOrder
from common_tasks.tasks import QUEUES, send_process_order
from order_store.store import OrderStore
from worker.tasks import send_confirmation

logger = logging.getLogger("worker.reconciler")

# Every message names its order in its `kwargsrepr` header (see common_tasks.tasks.dispatch; Celery's
# own repr of a retried task's kwargs too), so a message can be matched without decoding its body.
ORDER_ID_IN_MESSAGE = re.compile(rb"order_id\W{1,4}([0-9a-f]{32})")
SCAN_CHUNK = 1000


def orders_in_flight(app: Celery, queues: Iterable[str]) -> set[str]:
    """Ids of the orders that a message names, waiting in one of `queues` or unacknowledged."""
    found: set[str] = set()

    def scan(raw: bytes) -> None:
        found.update(order_id.decode() for order_id in ORDER_ID_IN_MESSAGE.findall(raw))

    with app.connection_for_read() as connection:
        channel = connection.default_channel  # kombu's Redis channel: its client and key names
        client = channel.client
        for queue in queues:
            start = 0
            while batch := client.lrange(queue, start, start + SCAN_CHUNK - 1):
                for raw in batch:
                    scan(raw)
                start += SCAN_CHUNK
        for _, raw in client.hscan_iter(channel.unacked_key, count=SCAN_CHUNK):
            scan(raw)
    return found


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
        stale = self.store.stale_open_orders(now - self.after)
        if not stale:
            return 0
        in_flight = orders_in_flight(self.app, QUEUES)
        for order_id in stale:
            record = self.store.get(order_id)
            if record is None or record.status == "failed" or record.notification != "pending":
                self.store.forget_open(order_id)
                continue
            if order_id in in_flight:
                self.store.touch_open(order_id)  # not stranded: look again after `after` seconds
                continue
            if record.status in ("accepted", "processing"):
                send_process_order(self.app, ProcessOrder.for_order(order_id, record.request()))
            else:
                send_confirmation(self.app, order_id, self.store.completion(order_id))
            self.store.touch_open(order_id)
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
