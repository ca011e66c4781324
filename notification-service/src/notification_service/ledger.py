"""The delivery ledger: what notification-service alone knows and writes, in Redis.

Keys (owned by this service only):
- `notification:<order_id>`: a hash with `delivered` (confirmations the channel delivered, the audit
  count), `outcome` (`sent` or `failed`, once known) and `updated_at`.
- `notification:<order_id>:claim`: the task id delivering right now, expiring with the attempt's
  hard time limit, so that two copies of one confirmation never deliver at the same time.

The order record is the orders side's: the outcome and the count travel back to it in
`orders.record_notification`. Each change is one Lua script, atomic and idempotent.
"""

from __future__ import annotations

import time
from typing import Literal

import redis

from common_tasks.redis_state import redis_client

Claim = Literal["claimed", "busy", "delivered", "failed"]


def ledger_key(order_id: str) -> str:
    return f"notification:{order_id}"


def claim_key(order_id: str) -> str:
    return f"notification:{order_id}:claim"


# Whether the caller (task id ARGV[1]) may deliver now; if so it holds the claim for ARGV[2] seconds.
# A claim held by the same task id is an interrupted attempt of this very message (redelivered after
# a kill or a broker restart): it is taken over rather than waited for.
_CLAIM = """
local state = redis.call('HMGET', KEYS[1], 'delivered', 'outcome')
if tonumber(state[1] or '0') > 0 then return 'delivered' end
if state[2] == 'failed' then return 'failed' end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then return 'claimed' end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return 'claimed'
end
return 'busy'
"""

# Counts one delivery (never deduplicated: this is the audit count) and frees the claim.
_RECORD_DELIVERY = """
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'outcome', 'sent', 'updated_at', ARGV[1])
return redis.call('HINCRBY', KEYS[1], 'delivered', 1)
"""

# Records that the channel gave up (unless a delivery was counted already) and frees the claim.
_RECORD_FAILURE = """
redis.call('DEL', KEYS[2])
if tonumber(redis.call('HGET', KEYS[1], 'delivered') or '0') == 0 then
  redis.call('HSET', KEYS[1], 'outcome', 'failed', 'updated_at', ARGV[1])
end
"""


class DeliveryLedger:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._claim = client.register_script(_CLAIM)
        self._record_delivery = client.register_script(_RECORD_DELIVERY)
        self._record_failure = client.register_script(_RECORD_FAILURE)

    @classmethod
    def from_url(cls, url: str, sentinel_master: str | None = None) -> DeliveryLedger:
        return cls(redis_client(url, sentinel_master))

    def claim(self, order_id: str, owner: str, seconds: int) -> Claim:
        """`claimed`: deliver now. `delivered`/`failed`: the outcome is known already. `busy`: a copy
        with another task id is delivering."""
        return self._claim(keys=[ledger_key(order_id), claim_key(order_id)], args=[owner, seconds])  # type: ignore[no-any-return]

    def release(self, order_id: str) -> None:
        self.client.delete(claim_key(order_id))

    def record_delivery(self, order_id: str) -> int:
        """Count one delivery by the channel; returns the count so far."""
        return int(self._record_delivery(keys=[ledger_key(order_id), claim_key(order_id)], args=[time.time()]))

    def record_failure(self, order_id: str) -> None:
        self._record_failure(keys=[ledger_key(order_id), claim_key(order_id)], args=[time.time()])

    def delivered(self, order_id: str) -> int:
        return int(self.client.hget(ledger_key(order_id), "delivered") or 0)
