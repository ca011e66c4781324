import redis

from common_tasks.schemas import OrderRequest
from order_store.store import OPEN_ORDERS_KEY, Completion, OrderStore

ORDER_ID = "cd" * 16
REQUEST = OrderRequest.model_validate(
    {"customer_email": "a@example.com", "items": [{"sku": "A", "quantity": 2, "unit_price": "1.25"}]}
)


def test_transitions_are_idempotent(redis_client: redis.Redis) -> None:
    store = OrderStore(redis_client)
    store.create(ORDER_ID, REQUEST)
    assert redis_client.zscore(OPEN_ORDERS_KEY, ORDER_ID) is not None

    assert store.start_processing(ORDER_ID, "w1") == ("accepted", 1)
    assert store.start_processing(ORDER_ID, "w2") == ("processing", 2)  # a second attempt is counted
    assert store.complete(ORDER_ID, "2.50", "w1") == Completion(True, "completed", "pending", "2.50", "a@example.com")
    assert store.complete(ORDER_ID, "9.99", "w2") == Completion(False, "completed", "pending", "2.50", "a@example.com")
    assert store.completion(ORDER_ID).awaits_notification
    assert store.start_processing(ORDER_ID, "w3") == ("completed", 0)

    assert store.record_notification(ORDER_ID, "sent", 1) is True
    assert store.record_notification(ORDER_ID, "failed", 0) is False
    assert not store.completion(ORDER_ID).awaits_notification
    record = store.get(ORDER_ID)
    assert record is not None
    assert (record.status, record.total, record.worker, record.notification) == ("completed", "2.50", "w1", "sent")
    assert redis_client.zscore(OPEN_ORDERS_KEY, ORDER_ID) is None


def test_unknown_orders_are_not_created_by_transitions(redis_client: redis.Redis) -> None:
    store = OrderStore(redis_client)
    assert store.start_processing(ORDER_ID, "w") == (None, 0)
    assert store.complete(ORDER_ID, "1.00", "w") == Completion(False, None, None, None, None)
    assert store.get(ORDER_ID) is None
    assert redis_client.dbsize() == 0


def test_the_outcome_and_its_delivery_count_are_written_together(redis_client: redis.Redis) -> None:
    store = OrderStore(redis_client)
    store.create(ORDER_ID, REQUEST)
    store.complete(ORDER_ID, "2.50", "w1")
    record = store.get(ORDER_ID)
    assert record is not None and (record.notification, record.notifications_sent) == ("pending", 0)
    assert store.record_notification(ORDER_ID, "sent", 1) is True
    assert store.record_notification(ORDER_ID, "sent", 2) is False  # a channel that delivered twice
    assert store.record_notification(ORDER_ID, "sent", 1) is False  # an older report never lowers it
    record = store.get(ORDER_ID)
    assert record is not None and (record.notification, record.notifications_sent) == ("sent", 2)


def test_every_step_renews_the_lease_and_an_expired_one_is_renewed_once(redis_client: redis.Redis) -> None:
    store = OrderStore(redis_client)
    store.create(ORDER_ID, REQUEST)
    leased_at = redis_client.zscore(OPEN_ORDERS_KEY, ORDER_ID)
    assert store.expired_leases(older_than=0) == []
    assert store.expired_leases(older_than=4_000_000_000) == [ORDER_ID]
    for step in (lambda: store.start_processing(ORDER_ID, "w"), lambda: store.complete(ORDER_ID, "2.50", "w")):
        redis_client.zadd(OPEN_ORDERS_KEY, {ORDER_ID: 1.0})  # as if the lease had long expired
        step()
        renewed = redis_client.zscore(OPEN_ORDERS_KEY, ORDER_ID)
        assert renewed is not None and leased_at is not None and renewed >= leased_at
    redis_client.zadd(OPEN_ORDERS_KEY, {ORDER_ID: 1.0})
    assert store.renew_lease(ORDER_ID, expired_before=2.0) is True
    assert store.renew_lease(ORDER_ID, expired_before=2.0) is False  # another reconciler took it
    assert store.expired_leases(older_than=2.0) == []
    store.record_notification(ORDER_ID, "sent", 1)
    assert store.expired_leases(older_than=4_000_000_000) == []
    assert store.renew_lease(ORDER_ID, expired_before=4_000_000_000) is False  # ended: not re-created


def test_a_failed_order_holds_no_lease(redis_client: redis.Redis) -> None:
    store = OrderStore(redis_client)
    store.create(ORDER_ID, REQUEST)
    store.fail(ORDER_ID, "test")
    assert store.expired_leases(older_than=4_000_000_000) == []
