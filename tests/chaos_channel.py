"""The soak's notification channel: a receiver outside the stack that counts every delivery.

Loaded by notification-service as NOTIFICATION_CHANNEL=chaos_channel:CountingChannel. Its state lives
in a Redis that the soak never restarts (CHAOS_CHANNEL_REDIS_URL), as a provider's would:
- `chaos:sends` (hash): deliveries per idempotency key (the order id), every one counted, and
  `chaos:senders:<key>` (list): the pid of the process that made each;
- `chaos:killed-after-delivery` (set): keys whose delivery was followed by a SIGKILL of the whole
  service before it could record it (the one case only the receiver's idempotency covers);
- `chaos:hung` (set): keys of attempts that hung until the service interrupted them.
The soak arms the two faults with `chaos:kill-after-delivery` and `chaos:hang-next`.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import redis

from common_tasks.schemas import SendOrderConfirmation


class CountingChannel:
    def __init__(self) -> None:
        self.redis = redis.Redis.from_url(os.environ["CHAOS_CHANNEL_REDIS_URL"], decode_responses=True)

    def send(self, confirmation: SendOrderConfirmation, *, idempotency_key: str, timeout: float, **_: Any) -> str:
        if self.redis.getdel("chaos:hang-next"):
            self.redis.sadd("chaos:hung", idempotency_key)
            time.sleep(3600)  # a channel that ignores its timeout: the service's bound interrupts it
        pipe = self.redis.pipeline()
        pipe.hincrby("chaos:sends", idempotency_key, 1)
        pipe.rpush(f"chaos:senders:{idempotency_key}", os.getpid())
        pipe.execute()
        if self.redis.getdel("chaos:kill-after-delivery"):
            self.redis.sadd("chaos:killed-after-delivery", idempotency_key)
            os.kill(os.getppid(), signal.SIGKILL)  # the service's main process
            os._exit(1)
        return "counted"
