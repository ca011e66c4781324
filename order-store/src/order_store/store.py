"""The order store: every order's state in Redis, owned by this one module.

Layout: a hash `order:<order_id>` per order, and a sorted set `orders:open` of the orders whose work
is not finished, scored by the time their current step last moved: each order's lease. Every step
renews it (creation, the start of processing, completion; the reconciler when it re-sends a step),
and recording the notification outcome (or failing the order) ends it; the reconciler re-sends the
next step of every order whose lease is older than its delay, reading only those from the index.
State changes are Lua scripts, so each is atomic and idempotent: a redelivered task never moves an
order backwards or counts anything twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Literal

import redis

from common_tasks.redis_state import redis_client
from common_tasks.schemas import OrderItem, OrderRequest

OrderStatus = Literal["accepted", "processing", "completed", "failed"]
NotificationState = Literal["pending", "sent", "failed"]

OPEN_ORDERS_KEY = "orders:open"


def order_key(order_id: str) -> str:
    return f"order:{order_id}"


@dataclass(frozen=True)
class OrderRecord:
    order_id: str
    status: OrderStatus
    customer_email: str
    items: list[OrderItem]
    total: str | None
    notification: NotificationState
    notifications_sent: int
    attempts: int
    worker: str | None
    failure: str | None
    created_at: float
    updated_at: float

    def request(self) -> OrderRequest:
        """The order as it was accepted (what `orders.process` carries)."""
        return OrderRequest(customer_email=self.customer_email, items=self.items)


@dataclass(frozen=True)
class Completion:
    """What `OrderStore.complete` did, and the order's state after it."""

    completed_now: bool
    status: str | None
    notification: str | None
    total: str | None
    customer_email: str | None = None

    @property
    def awaits_notification(self) -> bool:
        return self.status == "completed" and self.notification == "pending"


# Creates an order: its hash (ARGV[3..]: field, value, ...) and its place in the open index.
_CREATE = """
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
"""

# Moves accepted -> processing, counts the attempt and renews the lease; returns {the status before
# the call, attempts so far} ({false, 0} when the order is unknown).
_START_PROCESSING = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'accepted' or status == 'processing' then
  redis.call('HSET', KEYS[1], 'status', 'processing', 'worker', ARGV[1], 'updated_at', ARGV[2])
  redis.call('ZADD', KEYS[2], 'XX', ARGV[2], ARGV[3])
  return {status, redis.call('HINCRBY', KEYS[1], 'attempts', 1)}
end
return {status, 0}
"""

# Moves accepted|processing -> completed with its total and renews the lease. Returns {1 if this
# call completed it, else 0, status, notification state, total, customer e-mail}: all the next step
# needs, without a second read.
_COMPLETE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'accepted' or status == 'processing' then
  redis.call('HSET', KEYS[1], 'status', 'completed', 'total', ARGV[1], 'worker', ARGV[2], 'updated_at', ARGV[3])
  redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[4])
  local state = redis.call('HMGET', KEYS[1], 'notification', 'customer_email')
  return {1, 'completed', state[1], ARGV[1], state[2]}
end
local state = redis.call('HMGET', KEYS[1], 'notification', 'total', 'customer_email')
return {0, status or '', state[1] or '', state[2] or '', state[3] or ''}
"""

# Moves any unfinished order to failed and closes it; returns 1 when this call failed it.
_FAIL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'accepted' or status == 'processing' then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'notification', 'failed', 'failure', ARGV[1], 'updated_at', ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 1
end
return 0
"""

# Sets the notification outcome once (pending -> sent|failed) together with the delivery count that
# notification-service reported, and closes the order; returns 1 when this call set it. A later
# report of more deliveries of a sent confirmation (a channel that delivered twice) raises the count.
_RECORD_NOTIFICATION = """
local state = redis.call('HGET', KEYS[1], 'notification')
if state == 'pending' then
  redis.call('HSET', KEYS[1], 'notification', ARGV[1], 'notifications_sent', ARGV[5], 'updated_at', ARGV[2])
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'failure', ARGV[3]) end
  redis.call('ZREM', KEYS[2], ARGV[4])
  return 1
end
local counted = tonumber(redis.call('HGET', KEYS[1], 'notifications_sent') or '0')
if state == 'sent' and ARGV[1] == 'sent' and tonumber(ARGV[5]) > counted then
  redis.call('HSET', KEYS[1], 'notifications_sent', ARGV[5])
end
return 0
"""


# Renews an expired lease (ARGV: order id, expired before, now); 1 when this call renewed it.
_RENEW_LEASE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
  return 1
end
return 0
"""


class OrderStore:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._start_processing = client.register_script(_START_PROCESSING)
        self._complete = client.register_script(_COMPLETE)
        self._fail = client.register_script(_FAIL)
        self._record_notification = client.register_script(_RECORD_NOTIFICATION)
        self._renew_lease = client.register_script(_RENEW_LEASE)

    @classmethod
    def from_url(cls, url: str, sentinel_master: str | None = None) -> OrderStore:
        return cls(redis_client(url, sentinel_master))

    def ping(self) -> bool:
        return bool(self.client.ping())

    def create(self, order_id: str, request: OrderRequest, replicas: int = 0, replica_timeout: float = 0.5) -> bool:
        """Store a new order. With `replicas`, wait up to `replica_timeout` seconds until that many
        replicas hold it (Redis WAIT, on the connection that wrote it) and return whether they do;
        the record stays on the master either way (the caller deletes it if it gives up)."""
        now = time.time()
        fields = {
            "status": "accepted",
            "customer_email": request.customer_email,
            "items": json.dumps([item.model_dump(mode="json") for item in request.items]),
            "notification": "pending",
            "notifications_sent": 0,
            "created_at": now,
            "updated_at": now,
        }
        # One script (atomic), then WAIT, both on one connection: WAIT counts that connection's
        # writes, and inside MULTI it would not wait at all.
        pipe = self.client.pipeline(transaction=False)
        pairs = [str(part) for pair in fields.items() for part in pair]
        pipe.eval(_CREATE, 2, order_key(order_id), OPEN_ORDERS_KEY, order_id, now, *pairs)
        if replicas:
            pipe.execute_command("WAIT", replicas, max(1, round(replica_timeout * 1000)))
        results = pipe.execute()
        return not replicas or int(results[-1]) >= replicas

    def delete(self, order_id: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(order_key(order_id))
        pipe.zrem(OPEN_ORDERS_KEY, order_id)
        pipe.execute()

    def get(self, order_id: str) -> OrderRecord | None:
        raw = self.client.hgetall(order_key(order_id))
        if not raw:
            return None
        return OrderRecord(
            order_id=order_id,
            status=raw["status"],  # type: ignore[arg-type]
            customer_email=raw["customer_email"],
            items=[OrderItem.model_validate(item) for item in json.loads(raw["items"])],
            total=raw.get("total"),
            notification=raw["notification"],  # type: ignore[arg-type]
            notifications_sent=int(raw.get("notifications_sent", 0)),
            attempts=int(raw.get("attempts", 0)),
            worker=raw.get("worker"),
            failure=raw.get("failure"),
            created_at=float(raw["created_at"]),
            updated_at=float(raw["updated_at"]),
        )

    def start_processing(self, order_id: str, worker: str) -> tuple[OrderStatus | None, int]:
        """(the status before, attempts counted so far): an accepted or processing order becomes
        processing, and this attempt is counted."""
        keys = [order_key(order_id), OPEN_ORDERS_KEY]
        status, attempts = self._start_processing(keys=keys, args=[worker, time.time(), order_id])
        return status or None, int(attempts)

    def complete(self, order_id: str, total: str, worker: str) -> Completion:
        keys = [order_key(order_id), OPEN_ORDERS_KEY]
        completed_now, *state = self._complete(keys=keys, args=[total, worker, time.time(), order_id])
        return Completion(bool(completed_now), *(value or None for value in state))

    def completion(self, order_id: str) -> Completion:
        """The order's state as `complete` reports it, without changing anything."""
        fields = ["status", "notification", "total", "customer_email"]
        return Completion(False, *self.client.hmget(order_key(order_id), fields))

    def fail(self, order_id: str, reason: str) -> bool:
        return bool(self._fail(keys=[order_key(order_id), OPEN_ORDERS_KEY], args=[reason, time.time(), order_id]))

    def record_notification(self, order_id: str, outcome: NotificationState, deliveries: int, detail: str = "") -> bool:
        """Record what notification-service reported: the outcome and how many deliveries it counted."""
        keys = [order_key(order_id), OPEN_ORDERS_KEY]
        return bool(self._record_notification(keys=keys, args=[outcome, time.time(), detail, order_id, deliveries]))

    def expired_leases(self, older_than: float, limit: int = 100) -> list[str]:
        """Open orders whose current step last moved before `older_than` (a Unix time), oldest first."""
        return list(self.client.zrangebyscore(OPEN_ORDERS_KEY, "-inf", older_than, start=0, num=limit))

    def renew_lease(self, order_id: str, expired_before: float) -> bool:
        """Renew the lease of an open order if it is still older than `expired_before`; False when
        it moved meanwhile (a step ran, or another reconciler took it)."""
        return bool(self._renew_lease(keys=[OPEN_ORDERS_KEY], args=[order_id, expired_before, time.time()]))

    def forget_open(self, order_id: str) -> None:
        self.client.zrem(OPEN_ORDERS_KEY, order_id)
