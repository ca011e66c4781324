"""The delivery ledger: what notification-service alone knows and writes, in Redis.

Keys (owned by this service only):
- `notification:<order_id>`: a hash with `delivered` (confirmations the channel delivered, the audit
  count), `outcome` (`sent` or `failed`, once known), `last_delivery` (the attempt counted last),
  `holder` (the attempt that took the claim last and has not ended), `abandoned` (attempts that took
  the claim and never ended: their process died) and `updated_at`.
- `notification:<order_id>:claim`: the token (attempt id) of the attempt delivering right now, a
  token lock (as redis-py's `redis.lock.Lock`: SET NX with an expiry, released and recorded only by
  compare-and-delete), expiring with the attempt's hard time limit. No attempt ever takes over
  another's claim: a copy that finds it held is dropped, and the order's lease brings the
  confirmation back if the holder never finishes (worker.reconciler).

The order record is the orders side's: the outcome and the count travel back to it in
`orders.record_notification`. Each change is one Lua script, atomic and idempotent, so that it can
be written again after a failover.

Durability: Redis replicates asynchronously, so a master lost a moment after a write takes the
write with it, and a confirmation whose claim or delivery record was lost would be delivered again.
With `replicas` (1 on a Sentinel ledger), every claim and record waits for that many replicas
(Redis WAIT, on the connection that wrote it). If the connection drops meanwhile, or the replicas
do not answer in time and the Sentinels now name another master (the one written to was deposed),
the write is made again on the master the Sentinels name, for up to `failover_seconds` (a
delivery record: until it lands); so is any write whose connection failed, on a single Redis too. Replicas
that are behind or gone do not stop deliveries: the master the Sentinels name holds the write.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any, Literal

import redis
from redis.sentinel import MasterNotFoundError, SentinelConnectionPool

from common_tasks.redis_state import redis_client

# `claimed`: deliver now. `delivered`/`failed`: the outcome is known already. `busy`: another attempt
# holds the claim. `abandoned`: too many attempts died holding the claim; give the confirmation up.
Claim = Literal["claimed", "busy", "delivered", "failed", "abandoned"]


def ledger_key(order_id: str) -> str:
    return f"notification:{order_id}"


def claim_key(order_id: str) -> str:
    return f"notification:{order_id}:claim"


def new_attempt() -> str:
    """A token for one execution of a delivery: its claim and its delivery record carry it."""
    return uuid.uuid4().hex


# KEYS: ledger, claim. ARGV: token, seconds, most abandoned attempts. The same token again (a write
# repeated after a failover) keeps its claim. An attempt that took the claim and never ended (its
# `holder` is still set when the claim is free again) counts as abandoned.
_CLAIM = """
local state = redis.call('HMGET', KEYS[1], 'delivered', 'outcome', 'holder')
if tonumber(state[1] or '0') > 0 then return 'delivered' end
if state[2] == 'failed' then return 'failed' end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then
  if state[3] and state[3] ~= ARGV[1] then
    if redis.call('HINCRBY', KEYS[1], 'abandoned', 1) >= tonumber(ARGV[3]) then
      redis.call('DEL', KEYS[2])
      return 'abandoned'
    end
  end
  redis.call('HSET', KEYS[1], 'holder', ARGV[1])
  return 'claimed'
end
if redis.call('GET', KEYS[2]) == ARGV[1] then return 'claimed' end
return 'busy'
"""

# The end of an attempt (KEYS: ledger, claim; ARGV[1]: token): frees the claim if it is still this
# attempt's, and clears `holder` if it names this attempt.
_END_ATTEMPT = """
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then redis.call('HDEL', KEYS[1], 'holder') end
"""

# KEYS: ledger, claim. ARGV: token, time. Counts one delivery (the audit count: two attempts that
# both delivered count two) and ends the attempt; the same attempt is counted once.
_RECORD_DELIVERY = (
    _END_ATTEMPT
    + """
if redis.call('HGET', KEYS[1], 'last_delivery') == ARGV[1] then
  return tonumber(redis.call('HGET', KEYS[1], 'delivered'))
end
redis.call('HSET', KEYS[1], 'outcome', 'sent', 'last_delivery', ARGV[1], 'updated_at', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'delivered', 1)
"""
)

# Records that the channel gave up (unless a delivery was counted already) and ends the attempt.
_RECORD_FAILURE = (
    _END_ATTEMPT
    + """
if tonumber(redis.call('HGET', KEYS[1], 'delivered') or '0') == 0 then
  redis.call('HSET', KEYS[1], 'outcome', 'failed', 'updated_at', ARGV[2])
end
return 0
"""
)

# Frees the claim of an attempt that will be retried (ARGV[1]: token).
_RELEASE = _END_ATTEMPT + "return 0"

RETRY_INTERVAL = 0.25


class DeliveryLedger:
    def __init__(
        self,
        client: redis.Redis,
        replicas: int = 0,
        replica_timeout: float = 0.5,
        failover_seconds: float = 20.0,
    ) -> None:
        self.client = client
        self.replicas = replicas
        self.replica_timeout = replica_timeout
        self.failover_seconds = failover_seconds
        scripts = (_CLAIM, _RECORD_DELIVERY, _RECORD_FAILURE, _RELEASE)
        self._scripts = {script: client.register_script(script) for script in scripts}

    @classmethod
    def from_url(cls, url: str, sentinel_master: str | None = None, **durability: Any) -> DeliveryLedger:
        return cls(redis_client(url, sentinel_master), **durability)

    def _write(self, script: str, keys: list[str], args: list[Any], until_landed: bool = False) -> Any:
        """Run one idempotent script; with replicas, WAIT for them on the same connection. While the
        connection fails, write the same again (the same token: a claim whose reply was lost is not
        taken for an abandoned attempt later): for `failover_seconds`, or for as long as it takes
        with `until_landed` (a delivery that happened must be recorded; the attempt's hard time
        limit is the bound)."""
        patience = math.inf if until_landed else self.failover_seconds
        deadline = time.monotonic() + patience
        while True:
            try:
                if not self.replicas:
                    return self._scripts[script](keys=keys, args=args)
                # EVAL, not EVALSHA: a new master after a failover may not have the script cached.
                pipe = self.client.pipeline(transaction=False)
                pipe.eval(script, len(keys), *keys, *args)
                pipe.execute_command("WAIT", self.replicas, max(1, round(self.replica_timeout * 1000)))
                written, replicated = pipe.execute()
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() >= deadline:
                    raise
            else:
                if replicated >= self.replicas or not self._master_moved() or time.monotonic() >= deadline:
                    return written
            time.sleep(RETRY_INTERVAL)

    def _master_moved(self) -> bool:
        """Whether the Sentinels name another master than the one written to. A deposed master (one
        the Sentinels replaced while it was alive, e.g. too slow to answer them) takes writes until
        it is turned into a replica, and then drops them; redis-py's pool then drops its idle
        connections, so that the next write goes to the master the Sentinels name."""
        pool = self.client.connection_pool
        if not isinstance(pool, SentinelConnectionPool):
            return False
        written_to = pool.master_address
        try:
            return bool(pool.get_master_address() != written_to)
        except (redis.ConnectionError, redis.TimeoutError, MasterNotFoundError):
            return True  # no master named right now: write again once there is one

    def claim(self, order_id: str, token: str, seconds: int, most_abandoned: int) -> Claim:
        """Whether the attempt holding `token` may deliver now (see Claim); if it may, the claim is
        its for `seconds`."""
        keys = [ledger_key(order_id), claim_key(order_id)]
        return self._write(_CLAIM, keys, [token, seconds, most_abandoned])  # type: ignore[no-any-return]

    def release(self, order_id: str, token: str) -> None:
        self._write(_RELEASE, [ledger_key(order_id), claim_key(order_id)], [token])

    def record_delivery(self, order_id: str, token: str) -> int:
        """Count the delivery made by attempt `token` (once, however often recorded), written again
        until it lands (the attempt's hard time limit is the bound); returns the count."""
        keys = [ledger_key(order_id), claim_key(order_id)]
        return int(self._write(_RECORD_DELIVERY, keys, [token, time.time()], until_landed=True))

    def record_failure(self, order_id: str, token: str) -> None:
        keys = [ledger_key(order_id), claim_key(order_id)]
        self._write(_RECORD_FAILURE, keys, [token, time.time()], until_landed=True)

    def delivered(self, order_id: str) -> int:
        return int(self.client.hget(ledger_key(order_id), "delivered") or 0)
