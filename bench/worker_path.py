"""Phase 1, the worker path: preloaded orders drained by the worker vs a bare Celery no-op task."""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

from bench.loadgen import BODY
from bench.plan import TARGET_WORKER_RATIO, progress, ratio
from common_tasks.celery_app import create_celery_app
from common_tasks.schemas import OrderRequest, ProcessOrder
from common_tasks.tasks import send_process_order
from order_store.settings import OrderStoreSettings
from order_store.store import OrderStore


class WorkerPath:
    """Phase 1 (a mixin of bench.run.Bench)."""

    # phase 1: worker path

    def preload(self, kind: str, count: int) -> list[str]:
        order = OrderRequest.model_validate_json(BODY)
        ids = [uuid.uuid4().hex for _ in range(count)]
        if kind == "project":
            settings = OrderStoreSettings(
                CELERY_BROKER_URL=self.redis_server.url(0), CELERY_RESULT_BACKEND=self.redis_server.url(1)
            )
            app = create_celery_app(settings, "bench-loader")
            store = OrderStore.from_url(settings.order_store_url)
            for order_id in ids:
                store.create(order_id, order)
                send_process_order(app, ProcessOrder.for_order(order_id, order))
            app.close()
            store.client.close()
        else:
            from bench import bare_celery

            bare_celery.app.conf.broker_url = self.redis_server.url(0)
            for order_id in ids:
                payload = ProcessOrder.for_order(order_id, order)
                bare_celery.send(payload.model_dump(mode="json"))
            bare_celery.app.close()
        return ids

    def drain_once(self, kind: str, run: int) -> dict[str, Any]:
        count = self.plan.worker_tasks
        client = self.redis()
        client.flushall()
        self.preload(kind, count)
        queued = client.llen("orders")
        if queued != count:
            raise RuntimeError(f"preloaded {count} messages but the orders queue holds {queued}")
        process = self.start_project_worker() if kind == "project" else self.start_bare_worker()
        pipe = client.pipeline(transaction=False)
        started = finished = None
        empty_seen = 0
        deadline = time.monotonic() + 60 + count / 50
        while True:
            queue_length, unacked = pipe.llen("orders").hlen("unacked").execute()
            now = time.perf_counter()
            if started is None and queue_length < count:
                started = now
            if queue_length == 0 and unacked == 0:
                empty_seen += 1
                finished = finished or now
                if empty_seen >= 3:  # a message between BRPOP and the unacked hash is invisible for a moment
                    break
            else:
                empty_seen, finished = 0, None
            if not process.alive():
                raise RuntimeError(f"{kind} worker exited:\n{process.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} worker did not drain {count} tasks in time:\n{process.log()[-3000:]}")
            time.sleep(0.002)
        assert started is not None and finished is not None
        elapsed = finished - started
        result: dict[str, Any] = {
            "run": run,
            "tasks": count,
            "seconds": round(elapsed, 3),
            "tasks_per_s": round(count / elapsed, 1),
        }
        if kind == "project":
            pipe = client.pipeline(transaction=False)
            for order_id in client.scan_iter("order:*", count=1000):
                pipe.hget(order_id, "status")
            statuses = pipe.execute()
            result["completed_orders"] = sum(1 for status in statuses if status == "completed")
            result["notifications_published"] = client.llen("notifications")
        self.stop(process)
        progress(f"worker path: {kind} run {run}: {count} tasks in {elapsed:.2f} s = {count / elapsed:.0f}/s")
        return result

    def worker_path(self) -> dict[str, Any]:
        runs: dict[str, list[dict[str, Any]]] = {"project": [], "baseline": []}
        for run in range(1, self.plan.worker_reps + 1):
            order = ("baseline", "project") if run % 2 else ("project", "baseline")
            for kind in order:
                runs[kind].append(self.drain_once("project" if kind == "project" else "bare", run))
        project = statistics.median(r["tasks_per_s"] for r in runs["project"])
        baseline = statistics.median(r["tasks_per_s"] for r in runs["baseline"])
        return {
            "description": "orders.process drained by the `worker` console script vs a bare Celery no-op task",
            "tasks_per_run": self.plan.worker_tasks,
            "concurrency": self.plan.concurrency,
            "pool": "prefork",
            "project": {"tasks_per_s": project, "runs": runs["project"]},
            "baseline": {"tasks_per_s": baseline, "runs": runs["baseline"]},
            "ratio": ratio(project, baseline),
            "target": TARGET_WORKER_RATIO,
        }
