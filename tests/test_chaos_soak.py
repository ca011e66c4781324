"""A seeded chaos soak of the console scripts: orders arrive at 20/s while a schedule drawn from the
seed kills, stops and restarts pieces of the stack. Then:

- every order answered 202 is completed, its notification `sent`, counted once by the ledger;
- the channel (a receiver outside the stack, tests/chaos_channel.py) got it, and got it more than
  once only when the process that delivered it first was SIGKILLed before it could record that: the
  one case where "sent once" rests on the receiver honouring the idempotency key (the order id);
- no answer but 202 and 503, no service exited or hung on its own, every warm stop ended within the
  compose file's grace period.

CHAOS_SEED (default: a new one every run, printed) and CHAOS_SECONDS (default 60) choose the
schedule and its length; `README.md` (Tests) lists the seeds run by hand.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from full_stack import OrderLoad, Stack
from stack_testkit import RedisServer, ServiceLauncher, ServiceProcess, report_figure, wait_until

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("worker", "notification-service")
# A short visibility timeout (30 s: time limits of 13.5 s) and leases of 10 s, so that recovery by
# lease, not Redis's redelivery, is what finishes interrupted orders.
SOAK_ENV = {
    "CELERY_VISIBILITY_TIMEOUT": "30",
    "RECONCILE_AFTER_SECONDS": "10",
    "RECONCILE_INTERVAL_SECONDS": "2",
    "WORKER_SIMULATED_WORK_SECONDS": "0.02",
    "NOTIFICATION_CHANNEL": "chaos_channel:CountingChannel",
    "PYTHONPATH": str(ROOT / "tests"),
}
# notification-service's bound on one channel call: the channel's timeout, half of every task's time
# limit (common_tasks.celery_app.task_time_limit(30) / 2), and a second (notification_service.tasks).
CHANNEL_CALL_LIMIT = 13.5 / 2 + 1


@pytest.fixture
def aof_redis(services: ServiceLauncher, tmp_path: Path) -> Iterator[RedisServer]:
    """The stack's Redis, persisted like the compose file's (appendonly, everysec)."""
    server = RedisServer(tmp_path / "redis-aof").start(appendonly=True)
    yield server
    services.stop_all()
    server.stop()


def grace_periods() -> dict[str, float]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return {name: float(str(compose[name]["stop_grace_period"]).rstrip("s")) for name in SERVICES}


def process_tree(process: ServiceProcess) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(process.process.pid)], capture_output=True, text=True).stdout
    return {process.process.pid, *map(int, out.split())}


class Chaos:
    """The stack under a seeded schedule of faults, and what each fault did."""

    def __init__(self, stack: Stack, redis: RedisServer, channel: RedisServer, rng: random.Random) -> None:
        self.stack = stack
        self.redis = redis
        self.channel = channel.client(3)
        self.rng = rng
        self.grace = grace_periods()
        self.env = {**SOAK_ENV, "CHAOS_CHANNEL_REDIS_URL": channel.url(3)}
        self.faults: Counter[str] = Counter()
        self.killed_pids: set[int] = set()
        self.exited_on_their_own: list[str] = []
        self.warm_stops: list[float] = []

    def start(self) -> Chaos:
        self.stack.start(**self.env)
        return self

    def restart(self, name: str) -> None:
        self.stack.processes[name] = self.stack.launcher.start(name, **self.env)

    def check_alive(self) -> None:
        for name in SERVICES:
            process = self.stack.processes[name]
            if not process.alive():
                self.exited_on_their_own.append(f"{name} (status {process.process.returncode})")
                self.restart(name)

    # -- the faults ------------------------------------------------------------------------------

    def sigkill(self, name: str) -> None:
        self.killed_pids |= process_tree(self.stack.processes[name])
        self.stack.processes[name].kill()
        self.restart(name)

    def kill_pool_child(self) -> None:
        process = self.stack.processes[self.rng.choice(SERVICES)]
        children = sorted(process_tree(process) - {process.process.pid})
        if children:
            child = self.rng.choice(children)
            self.killed_pids.add(child)
            os.kill(child, signal.SIGKILL)

    def warm_stop(self, name: str) -> None:
        started = time.monotonic()
        try:
            status = self.stack.processes[name].terminate(timeout=self.grace[name])
        except subprocess.TimeoutExpired:
            self.stack.processes[name].kill()
            raise AssertionError(
                f"a warm stop of {name} outlasted its grace period ({self.grace[name]:.0f}s)"
            ) from None
        assert status == 0, f"a warm stop of {name} ended with status {status}"
        self.warm_stops.append(time.monotonic() - started)
        self.restart(name)

    def restart_redis(self, down: float) -> None:
        self.redis.stop()
        time.sleep(down)
        self.redis.start()

    def redis_restarts_two_seconds_apart(self) -> None:
        self.restart_redis(self.rng.uniform(0.5, 1.5))
        time.sleep(2)
        self.restart_redis(self.rng.uniform(0.5, 1.5))

    def warm_stop_right_after_redis_returns(self) -> None:
        self.restart_redis(self.rng.uniform(0.5, 3))
        time.sleep(self.rng.uniform(0, 1))
        self.warm_stop(self.rng.choice(SERVICES))

    def sigkill_between_delivery_and_record(self) -> str | None:
        """The channel delivers, then SIGKILLs the whole notification-service before it records."""
        process = self.stack.processes["notification-service"]
        self.killed_pids |= process_tree(process)
        self.channel.set("chaos:kill-after-delivery", 1)
        try:
            wait_until(lambda: not process.alive(), 10, "no delivery came")
        except AssertionError:
            self.channel.delete("chaos:kill-after-delivery")
            return "SIGKILL between delivery and record (no delivery came within 10 s)"
        process.kill()  # the pool children left behind, if any
        self.restart("notification-service")
        return None

    def channel_time_limit_while_redis_is_down(self) -> str | None:
        """A delivery hangs (its channel ignores its timeout); Redis goes away before the service's
        bound on the channel call interrupts it, and comes back after."""
        hung_before = self.channel.scard("chaos:hung")
        self.channel.set("chaos:hang-next", 1)
        try:
            wait_until(lambda: self.channel.scard("chaos:hung") > hung_before, 10, "no delivery came")
        except AssertionError:
            self.channel.delete("chaos:hang-next")
            return "channel time limit while Redis is down (no delivery came within 10 s)"
        time.sleep(CHANNEL_CALL_LIMIT - 3)
        self.restart_redis(5)
        return None

    def schedule(self) -> dict[str, Callable[[], str | None]]:
        return {
            "worker SIGKILL": lambda: self.sigkill("worker"),
            "notification-service SIGKILL": lambda: self.sigkill("notification-service"),
            "pool child SIGKILL": self.kill_pool_child,
            "worker warm stop": lambda: self.warm_stop("worker"),
            "notification-service warm stop": lambda: self.warm_stop("notification-service"),
            "Redis restart": lambda: self.restart_redis(self.rng.uniform(0.5, 3)),
            "two Redis restarts 2 s apart": self.redis_restarts_two_seconds_apart,
            "warm stop within 1 s of Redis returning": self.warm_stop_right_after_redis_returns,
            "SIGKILL between delivery and record": self.sigkill_between_delivery_and_record,
            "channel time limit while Redis is down": self.channel_time_limit_while_redis_is_down,
        }

    def run(self, seconds: float) -> None:
        actions = self.schedule()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(self.rng.uniform(1, 4))
            self.check_alive()
            name = self.rng.choice(sorted(actions))
            self.faults[actions[name]() or name] += 1  # an action may say it could not strike
        self.check_alive()


def test_seeded_chaos_soak(services: ServiceLauncher, aof_redis: RedisServer, redis_server: RedisServer) -> None:
    seconds = float(os.environ.get("CHAOS_SECONDS", "60"))
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 1_000_000))
    print(f"chaos soak: CHAOS_SEED={seed} CHAOS_SECONDS={seconds:.0f}")
    chaos = Chaos(Stack(services.on(aof_redis), aof_redis), aof_redis, redis_server, random.Random(seed)).start()
    with OrderLoad(chaos.stack.api, rate=20) as load:
        chaos.run(seconds)
    finished = time.monotonic()
    views = chaos.stack.wait_finished(load.accepted, timeout=180)
    settle = time.monotonic() - finished
    chaos.check_alive()
    context = f"seed {seed}, faults {dict(chaos.faults)}"

    assert chaos.exited_on_their_own == [], f"{chaos.exited_on_their_own} ({context})"
    assert load.unexpected() == {}, f"{load.statuses} ({context})"
    outcomes = Counter((v["status"], v["notification"], v["notifications_sent"]) for v in views)
    assert set(outcomes) == {("completed", "sent", 1)}, f"{outcomes} ({context})"
    sends = {order_id: int(count) for order_id, count in chaos.channel.hgetall("chaos:sends").items()}
    senders = {order_id: chaos.channel.lrange(f"chaos:senders:{order_id}", 0, -1) for order_id in sends}
    never = [order_id for order_id in load.accepted if sends.get(order_id, 0) < 1]
    assert never == [], f"{len(never)} accepted orders never reached the channel ({context})"
    repeated = {order_id: count for order_id, count in sends.items() if count > 1}
    # A repeat is explained only when every earlier delivery's process was SIGKILLed afterwards.
    unexplained = {
        order_id: senders[order_id]
        for order_id in repeated
        if not all(int(pid) in chaos.killed_pids for pid in senders[order_id][:-1])
    }
    assert unexplained == {}, f"deliveries repeated by live processes: {unexplained} ({context})"
    report_figure(
        f"chaos soak (seed {seed}, {seconds:.0f}s, 20 orders/s): {sum(chaos.faults.values())} faults "
        f"({', '.join(f'{count} {name}' for name, count in sorted(chaos.faults.items()))}); "
        f"{len(load.accepted)} orders accepted, {load.statuses[503]} posts got 503, no other answer; all completed "
        f"and notified, the last {settle:.1f}s after the load stopped; {len(repeated)} delivered again after a "
        f"SIGKILL between delivery and record (same idempotency key); warm stops took at most "
        f"{max(chaos.warm_stops, default=0):.1f}s; no service exited on its own"
    )
