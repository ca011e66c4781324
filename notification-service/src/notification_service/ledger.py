"""The delivery ledger: what notification-service alone knows and writes, in Redis.

Keys (owned by this service only):
- `notification:<order_id>`: a hash with `delivered` (confirmations the channel delivered, the audit
  count), `outcome` (`sent` or `failed`, once known), `last_delivery` (the attempt counted last) and
  `updated_at`.
- `notification:<order_id>:claim`: `<task id> <attempt id>` of the attempt delivering right now,
  expiring with the attempt's hard time limit, so that two copies of one confirmation never deliver
  at the same time.

The order record is the orders side's: the outcome and the count travel back to it in
`orders.record_notification`. Each change is one Lua script, atomic and idempotent, so that it can
be written again after a failover.

Durability: Redis replicates asynchronously, so a master lost a moment after a write takes the
write with it, and a confirmation whose claim or delivery record was lost would be delivered again.
With `replicas` (1 on a Sentinel ledger), every claim and record waits for that many replicas
(Redis WAIT, on the connection that wrote it). If the connection drops meanwhile, or the replicas
do not answer in time and the Sentinels now name another master (the one written to was deposed),
the write is made again on the master the Sentinels name, for up to `failover_seconds`. Replicas
that are behind or gone do not stop deliveries: the master the Sentinels name holds the write.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import redis
from redis.sentinel import MasterNotFoundError, SentinelConnectionPool

from common_tasks.redis_state import redis_client

# `claimed`: deliver now. `delivered`/`failed`: the outcome is known already. `busy`: a copy with
# another task id is delivering. `held`: another attempt of this very task id is delivering, and this
# message was not redelivered, so it is a second copy (one a failover or a lost reply can leave
# behind), not the holder's own message coming back after the holder died.
Claim = Literal["claimed", "busy", "held", "delivered", "failed"]


def ledger_key(order_id: str) -> str:
    return f"notification:{order_id}"


def claim_key(order_id: str) -> str:
    return f"notification:{order_id}:claim"


def new_attempt() -> str:
    """An id for one execution of a delivery: its claim and its delivery record carry it."""
    return uuid.uuid4().hex


# KEYS: ledger, claim. ARGV: task id, attempt id, seconds, redelivered (1/0).
# The same attempt again (a write repeated after a failover) keeps its claim. Another attempt of the
# same task id takes the claim over only from a redelivered message: the holder died and its message
# came back (after a kill, a lost worker or a broker restart).
_CLAIM = """
local state = redis.call('HMGET', KEYS[1], 'delivered', 'outcome')
if tonumber(state[1] or '0') > 0 then return 'delivered' end
if state[2] == 'failed' then return 'failed' end
local mine = ARGV[1] .. ' ' .. ARGV[2]
if redis.call('SET', KEYS[2], mine, 'NX', 'EX', ARGV[3]) then return 'claimed' end
local holder = redis.call('GET', KEYS[2])
local same_task = string.sub(holder, 1, #ARGV[1] + 1) == ARGV[1] .. ' '
if holder == mine or (same_task and ARGV[4] == '1') then
  redis.call('SET', KEYS[2], mine, 'EX', ARGV[3])
  return 'claimed'
end
if same_task then return 'held' end
return 'busy'
"""

# KEYS: ledger, claim. ARGV: attempt id, time. Counts one delivery (the audit count: two attempts
# that both delivered count two) and frees the claim; the same attempt is counted once.
_RECORD_DELIVERY = """
redis.call('DEL', KEYS[2])
if redis.call('HGET', KEYS[1], 'last_delivery') == ARGV[1] then
  return tonumber(redis.call('HGET', KEYS[1], 'delivered'))
end
redis.call('HSET', KEYS[1], 'outcome', 'sent', 'last_delivery', ARGV[1], 'updated_at', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'delivered', 1)
"""

# Records that the channel gave up (unless a delivery was counted already) and frees the claim.
_RECORD_FAILURE = """
redis.call('DEL', KEYS[2])
if tonumber(redis.call('HGET', KEYS[1], 'delivered') or '0') == 0 then
  redis.call('HSET', KEYS[1], 'outcome', 'failed', 'updated_at', ARGV[1])
end
return 0
"""

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
        scripts = (_CLAIM, _RECORD_DELIVERY, _RECORD_FAILURE)
        self._scripts = {script: client.register_script(script) for script in scripts}

    @classmethod
    def from_url(cls, url: str, sentinel_master: str | None = None, **durability: Any) -> DeliveryLedger:
        return cls(redis_client(url, sentinel_master), **durability)

    def _write(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run one idempotent script; with replicas, WAIT for them on the same connection, and write
        again while the connection fails, until `failover_seconds` pass."""
        if not self.replicas:
            return self._scripts[script](keys=keys, args=args)
        deadline = time.monotonic() + self.failover_seconds
        while True:
            # EVAL, not EVALSHA: a new master after a failover may not have the script cached.
            pipe = self.client.pipeline(transaction=False)
            pipe.eval(script, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self.replicas, max(1, round(self.replica_timeout * 1000)))
            try:
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

    def claim(self, order_id: str, task_id: str, attempt: str, seconds: int, redelivered: bool = False) -> Claim:
        """Whether attempt `attempt` of task `task_id` may deliver now (see Claim); if it may, the
        claim is its for `seconds`."""
        args = [task_id, attempt, seconds, int(redelivered)]
        return self._write(_CLAIM, [ledger_key(order_id), claim_key(order_id)], args)  # type: ignore[no-any-return]

    def claim_seconds_left(self, order_id: str) -> int:
        return max(0, int(self.client.ttl(claim_key(order_id))))

    def release(self, order_id: str) -> None:
        self.client.delete(claim_key(order_id))

    def record_delivery(self, order_id: str, attempt: str) -> int:
        """Count the delivery made by `attempt` (once, however often recorded); returns the count."""
        keys = [ledger_key(order_id), claim_key(order_id)]
        return int(self._write(_RECORD_DELIVERY, keys, [attempt, time.time()]))

    def record_failure(self, order_id: str) -> None:
        self._write(_RECORD_FAILURE, [ledger_key(order_id), claim_key(order_id)], [time.time()])

    def delivered(self, order_id: str) -> int:
        return int(self.client.hget(ledger_key(order_id), "delivered") or 0)
