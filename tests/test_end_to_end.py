"""An order placed over HTTP is processed by the worker and confirmed by the notification service."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from full_stack import Stack, sample_order
from stack_testkit import report_figure

ORDERS = 100


def test_hundred_orders_complete_and_are_notified_exactly_once(stack: Stack) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        order_ids = list(pool.map(lambda i: stack.post_order(sample_order(quantity=i % 5 + 1)), range(ORDERS)))
    views = stack.audit(order_ids)
    elapsed = time.monotonic() - started

    assert len(set(order_ids)) == ORDERS
    assert [v["total"] for v in views] == [f"{(i % 5 + 1) * 9.99:.2f}" for i in range(ORDERS)]
    worker_log = stack.processes["worker"].log()
    notification_log = stack.processes["notification-service"].log()
    for order_id in order_ids:
        assert worker_log.count(f"order {order_id} completed") == 1
        assert notification_log.count(f"confirmation for order {order_id} delivered") == 1
    report_figure(
        f"end to end: {ORDERS} orders posted -> {ORDERS} completed -> {ORDERS} notified once each in {elapsed:.1f}s"
    )
