"""/metrics of the real service (gunicorn, 2 workers): the counts of all workers add up, a worker's
counts outlive it, and the multiprocess directory is the service's own and gone when it stops."""

from __future__ import annotations

import os
import shutil
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sample_orders import sample_order

from order_service import METRICS_DIR_PREFIX
from stack_testkit import ServiceLauncher, http_request, report_figure, wait_until

ACCEPTED = "order_service_orders_accepted_total"
REJECTED = "order_service_orders_rejected_total"
REQUESTS = "order_service_http_requests_total"
LATENCY_COUNT = "order_service_http_request_duration_seconds_count"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(api: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = http_request("GET", f"{api}/metrics")
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
    return samples(response.body.decode())


def accepted_by_process(metrics_dir: Path, scratch: Path) -> dict[int, float]:
    """Orders each process accepted, read from its own counter file with prometheus_client itself."""
    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        alone = scratch / str(pid)
        alone.mkdir(parents=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        counts[pid] = registry.get_sample_value(ACCEPTED) or 0.0
    return counts


def post_orders(api: str, count: int) -> list[int]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: http_request("POST", f"{api}/orders", sample_order()).status, range(count)))


def test_metrics_add_up_across_workers(services: ServiceLauncher, tmp_path: Path) -> None:
    # TMPDIR: where the service makes its multiprocess directory, so the test can look into it.
    service_tmp = tmp_path / "service-tmp"
    service_tmp.mkdir()
    service, api = services.start_http(
        "order-service", WEB_CONCURRENCY="2", TMPDIR=str(service_tmp), ORDER_RATE_LIMIT="1000000/second"
    )
    [metrics_dir] = service_tmp.glob(f"{METRICS_DIR_PREFIX}*")
    master = service.process.pid

    # Until both workers have accepted orders (the kernel decides which one accepts a connection).
    statuses: list[int] = []
    per_process: dict[int, float] = {}
    for batch in range(20):
        statuses += post_orders(api, 16)
        per_process = accepted_by_process(metrics_dir, tmp_path / f"scratch-{batch}")
        if sum(1 for pid, count in per_process.items() if pid != master and count > 0) >= 2:
            break
    workers = {pid for pid, count in per_process.items() if pid != master and count > 0}
    assert len(workers) == 2, per_process
    assert statuses == [202] * len(statuses)
    placed = len(statuses)
    assert http_request("POST", f"{api}/orders", sample_order(quantity=0)).status == 422
    assert http_request("POST", f"{api}/orders", b"{", headers={"Content-Type": "application/json"}).status == 400

    scraped = scrape(api)
    assert scraped[(ACCEPTED, ())] == placed == sum(per_process.values())
    post_202 = (("method", "POST"), ("route", "/orders"), ("status", "202"))
    assert scraped[(REQUESTS, post_202)] == placed
    assert scraped[(LATENCY_COUNT, post_202)] == placed
    assert scraped[(REJECTED, (("reason", "invalid_order"),))] == 1
    assert scraped[(REJECTED, (("reason", "malformed_json"),))] == 1
    split = sorted(count for pid, count in per_process.items() if pid != master)
    report_figure(f"/metrics under gunicorn: {placed} orders counted once across 2 workers (accepted {split})")

    # A worker that dies takes none of its counts along; gunicorn replaces it.
    os.kill(max(workers), signal.SIGKILL)
    wait_until(lambda: http_request("GET", f"{api}/healthz").status == 200, 30, "no worker answers")
    statuses = post_orders(api, 4)
    assert statuses == [202] * 4
    assert scrape(api)[(ACCEPTED, ())] == placed + 4

    assert service.terminate() == 0
    assert not metrics_dir.exists()  # removed by the master at exit
