"""Prometheus metrics (prometheus_client), served at `/metrics`, summed over gunicorn's workers.

Under gunicorn every worker is its own process, so the metrics use prometheus_client's multiprocess
mode: each process writes its samples to files under PROMETHEUS_MULTIPROC_DIR and `/metrics` adds
them up. `order_service.main` sets that variable to a fresh directory in the master, before
anything imports prometheus_client (which reads it when imported), and removes it at exit; the
`child_exit` hook tells prometheus_client a worker is gone (its counters stay counted). Without the
variable (the Flask app in-process, as in the fast tests) the metrics are this process's own.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from flask import Blueprint, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

from order_service import METRICS_DIR_PREFIX

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
CREATE_ORDER_ENDPOINT = "orders.create_order"
# A request that matched no route (404, 405) gets this route label: no unbounded label values.
UNMATCHED = "unmatched"

# This process's own registry (the single-process case); in multiprocess mode /metrics reads the files.
REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "order_service_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "order_service_http_request_duration_seconds",
    "Time from the request's start to its answer, by method, route template and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
ORDERS_ACCEPTED = Counter("order_service_orders_accepted", "Orders answered 202 (stored and queued)", registry=REGISTRY)
ORDERS_REJECTED = Counter(
    "order_service_orders_rejected",
    "POST /orders not accepted, by the error code of the answer (broker_unavailable is the 503)",
    ["reason"],
    registry=REGISTRY,
)

blueprint = Blueprint("metrics", __name__)


@blueprint.before_app_request
def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


@blueprint.after_app_request
def _record(response: Response) -> Response:
    rule = request.url_rule
    route = rule.rule if rule is not None else UNMATCHED
    labels = {"method": request.method, "route": route, "status": str(response.status_code)}
    REQUESTS.labels(**labels).inc()
    started = g.get("metrics_started")
    if started is not None:
        LATENCY.labels(**labels).observe(time.perf_counter() - started)
    if rule is not None and rule.endpoint == CREATE_ORDER_ENDPOINT:
        if response.status_code == 202:
            ORDERS_ACCEPTED.inc()
        else:
            body = response.get_json(silent=True)
            reason = body.get("error") if isinstance(body, dict) else None
            ORDERS_REJECTED.labels(reason=str(reason or response.status_code)).inc()
    return response


def collecting_registry() -> CollectorRegistry:
    """What /metrics shows: every process's samples in multiprocess mode, else this process's."""
    if MULTIPROC_DIR_ENV not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


@blueprint.get("/metrics")
def metrics() -> Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(collecting_registry()), 200, headers={"Content-Type": content_type})


# gunicorn server hooks (order_service.main), run in the master.
def child_exit(server: Any, worker: Any) -> None:
    if MULTIPROC_DIR_ENV in os.environ:
        multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    directory = os.environ.get(MULTIPROC_DIR_ENV)
    if directory and os.path.basename(directory).startswith(METRICS_DIR_PREFIX):  # only the one main() made
        shutil.rmtree(directory, ignore_errors=True)
