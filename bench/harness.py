"""The processes of a benchmark run: Redis, the project's console scripts and the baselines."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psutil
import redis

from bench.bare_chain import DONE_KEY
from bench.plan import REPO_ROOT, Plan
from stack_testkit import RedisServer, console_script, free_port, http_request, wait_until

# The services of an end-to-end stack, under the same names for the project and the bare chain.
SERVICES = ("web", "orders-worker", "notifications-worker", "redis")
MIB = 1024 * 1024


class Process:
    """A subprocess in its own process group, output to a log file; stop() ends the whole group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                argv, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_log(self, text: str, timeout: float = 60) -> None:
        def seen() -> bool:
            if not self.alive() and text not in self.log():
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.log()[-3000:]}")
            return text in self.log()

        wait_until(seen, timeout, f"{self.name} never logged {text!r}:\n{self.log()[-3000:]}", interval=0.02)

    def wait_http(self, url: str, timeout: float = 30) -> None:
        def serving() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.log()[-3000:]}")
            return http_request("GET", url, timeout=1).status == 200

        wait_until(serving, timeout, f"{self.name} never answered {url}:\n{self.log()[-3000:]}", interval=0.05)

    def terminate(self) -> None:
        """SIGTERM (a warm shutdown); stop() waits for it."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            self.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        try:  # pool children left behind, if any
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def tree(pid: int) -> list[psutil.Process]:
    """The process and its descendants (gunicorn workers, Celery pool children)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """user + system CPU of the processes, including their children that exited and were reaped."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def memory(processes: list[psutil.Process]) -> dict[str, float]:
    """RSS summed over the processes (counts pages that forked children share with their parent in
    every process), and PSS (each shared page split between its sharers), in MiB."""
    rss = pss = 0
    for process in processes:
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return {"rss_mib": round(rss / MIB, 1), "pss_mib": round(pss / MIB, 1), "processes": len(processes)}


class Stack:
    """One end-to-end stack on its own redis-server: the project's three services, or the bare chain
    (bench/bare_chain.py: two `celery worker` processes and bench/bare_flask.py)."""

    def __init__(self, kind: str, redis_server: RedisServer, services: dict[str, Process], url: str) -> None:
        self.kind = kind
        self.redis_server = redis_server
        self.services = services
        self.url = url
        self.client = redis_server.client(0)
        # Commands this harness sent to the stack's Redis since the last snapshot's INFO (taken out
        # of the counts).
        self.own_commands: dict[str, int] = {}
        # bare chain: the entries bench:done will have once every accepted order has finished
        self.expected_done = 0

    def processes(self) -> dict[str, list[psutil.Process]]:
        found = {name: tree(process.popen.pid) for name, process in self.services.items()}
        assert self.redis_server.process is not None
        found["redis"] = tree(self.redis_server.process.pid)
        return found

    def unfinished(self) -> int:
        """Orders accepted but not finished: one cheap command, counted as the harness's own."""
        if self.kind == "project":
            command, value = "zcard", self.client.zcard("orders:open")  # the order store's open orders
        else:
            command, value = "hlen", self.client.hlen(DONE_KEY)
            value = self.expected_done - value
        self.own_commands[command] = self.own_commands.get(command, 0) + 1
        return int(value)

    def completion_times(self, order_ids: list[str]) -> dict[str, tuple[float, float | None]]:
        """{order_id: (finished at, started at inside the stack or None)} for the finished orders."""
        found: dict[str, tuple[float, float | None]] = {}
        for start in range(0, len(order_ids), 1000):
            chunk = order_ids[start : start + 1000]
            pipe = self.client.pipeline(transaction=False)
            if self.kind == "project":
                for order_id in chunk:
                    pipe.hmget(f"order:{order_id}", "notification", "created_at", "updated_at")
                for order_id, (state, created, updated) in zip(chunk, pipe.execute(), strict=True):
                    if state == "sent":
                        found[order_id] = (float(updated), float(created))
            else:
                pipe.hmget(DONE_KEY, chunk)
                for order_id, finished in zip(chunk, pipe.execute()[0], strict=True):
                    if finished is not None:
                        found[order_id] = (float(finished), None)
        return found

    def kept_bytes(self, order_ids: list[str]) -> float | None:
        """Median bytes (MEMORY USAGE) of the keys the stack keeps per finished order (the project:
        `order:<id>` and `notification:<id>`; the bare chain keeps none: 0)."""
        if self.kind != "project":
            return 0.0
        sizes = []
        for order_id in order_ids[:25]:
            pipe = self.client.pipeline(transaction=False)
            for key in (f"order:{order_id}", f"notification:{order_id}", f"notification:{order_id}:claim"):
                pipe.memory_usage(key, samples=0)
            sizes.append(sum(size or 0 for size in pipe.execute()))
        return float(statistics.median(sizes)) if sizes else None

    def snapshot(self) -> dict[str, Any]:
        """CPU seconds and memory per service, and Redis's counters (one INFO call)."""
        processes = self.processes()
        info = self.client.info("all")
        own, self.own_commands = self.own_commands, {"info": 1}  # this INFO counts in the next one
        marker = None
        if self.kind == "bare":
            marker = self.client.memory_usage(DONE_KEY, samples=0)
            self.own_commands["memory|usage"] = 1
        return {
            "cpu": {name: cpu_seconds(procs) for name, procs in processes.items()},
            "memory": {name: memory(procs) for name, procs in processes.items()},
            "commands": {
                key.removeprefix("cmdstat_"): value["calls"]
                for key, value in info.items()
                if key.startswith("cmdstat_")
            },
            "own_commands": own,
            "keys": sum(
                value["keys"] for key, value in info.items() if key.startswith("db") and isinstance(value, dict)
            ),
            "used_memory": info["used_memory"],
            "marker_bytes": marker or 0,
        }


class Harness:
    """The processes and the Redis of one run; the phases (mixins) use them."""

    def __init__(self, plan: Plan, out_dir: Path, profile: bool = False) -> None:
        self.plan = plan
        # --profile: py-spy records every process of each stack during its first fixed-rate step.
        self.profile_dir: Path | None = out_dir / "profile" if profile else None
        self.profiled: set[str] = set()
        self.profiles: list[dict[str, Any]] = []
        self.out_dir = out_dir
        self.log_dir = out_dir / "logs"
        if self.log_dir.exists():
            shutil.rmtree(self.log_dir)
        self.log_dir.mkdir(parents=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="bench-"))
        self.redis_server = RedisServer(self.scratch / "redis")
        # The bare chain's own Redis, so that each stack's Redis CPU and commands are its own.
        self.bare_redis_server = RedisServer(self.scratch / "redis-bare")
        self.processes: list[Process] = []

    # environment and processes

    def env(self, redis_server: RedisServer | None = None, **overrides: str) -> dict[str, str]:
        redis_server = redis_server or self.redis_server
        env = dict(os.environ)
        pythonpath = [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env.update(
            PYTHONPATH=os.pathsep.join(pythonpath),
            PYTHONUNBUFFERED="1",
            CELERY_BROKER_URL=redis_server.url(0),
            CELERY_RESULT_BACKEND=redis_server.url(1),
            LOG_LEVEL="INFO",
            WORKER_CONCURRENCY=str(self.plan.concurrency),
            WEB_CONCURRENCY=str(self.plan.web_concurrency),
            WEB_CONNECTIONS=str(self.plan.web_connections),
            # The load comes from one address; the limiter still runs (its cost is measured).
            ORDER_RATE_LIMIT="1000000000/second",
            HOST="127.0.0.1",
        )
        env.update(overrides)
        return env

    def start(self, name: str, argv: list[str], redis_server: RedisServer | None = None, **env: str) -> Process:
        process = Process(name, argv, self.env(redis_server, **env), self.log_dir)
        self.processes.append(process)
        return process

    def stop(self, process: Process) -> None:
        process.stop()
        if process in self.processes:
            self.processes.remove(process)

    def stop_everything(self) -> None:
        for process in reversed(self.processes):
            process.stop(timeout=10)
        self.processes.clear()
        self.redis_server.stop()
        self.bare_redis_server.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def start_project_worker(self) -> Process:
        heartbeat = str(self.scratch / f"worker-{uuid.uuid4().hex[:6]}.heartbeat")
        return self.start("worker", [console_script("worker")], WORKER_HEARTBEAT_FILE=heartbeat)

    def start_bare_worker(self) -> Process:
        argv = [sys.executable, "-m", "celery", "-A", "bench.bare_celery", "worker", "--queues", "orders"]
        argv += ["--pool", "prefork", "--concurrency", str(self.plan.concurrency), "--loglevel", "INFO"]
        argv += ["--hostname", f"bare.{uuid.uuid4().hex[:6]}@%h", "--without-mingle", "--without-gossip"]
        return self.start("bare-worker", argv)

    def redis(self) -> redis.Redis:
        return self.redis_server.client(0)

    def start_stacks(self, kinds: tuple[str, ...], **env: str) -> list[Stack]:
        """Start the stacks (project on the main Redis, bare chain on its own, both flushed) side by
        side, then wait until every service is ready. `env`: settings for the project's services."""
        pending = []
        for kind in kinds:
            redis_server = self.redis_server if kind == "project" else self.bare_redis_server
            if redis_server.process is None:
                redis_server.start()
            redis_server.client(0).flushall()
            port = str(free_port())
            if kind == "project":
                heartbeat = str(self.scratch / f"{uuid.uuid4().hex[:6]}.heartbeat")
                services = {
                    "web": self.start("order-service", [console_script("order-service")], PORT=port, **env),
                    "orders-worker": self.start(
                        "worker", [console_script("worker")], WORKER_HEARTBEAT_FILE=heartbeat + "-w", **env
                    ),
                    "notifications-worker": self.start(
                        "notification-service",
                        [console_script("notification-service")],
                        WORKER_HEARTBEAT_FILE=heartbeat + "-n",
                        **env,
                    ),
                }
            else:
                services = {
                    "web": self.start(
                        "bare-flask", [sys.executable, "-m", "bench.bare_flask"], redis_server, PORT=port
                    ),
                    "orders-worker": self.start_bare_chain_worker("orders", redis_server),
                    "notifications-worker": self.start_bare_chain_worker("notifications", redis_server),
                }
            pending.append(Stack(kind, redis_server, services, f"http://127.0.0.1:{port}"))
        for stack in pending:
            stack.services["orders-worker"].wait_log(" ready.")
            stack.services["notifications-worker"].wait_log(" ready.")
            stack.services["web"].wait_http(f"{stack.url}/healthz")
        return pending

    def start_bare_chain_worker(self, queue: str, redis_server: RedisServer) -> Process:
        argv = [sys.executable, "-m", "celery", "-A", "bench.bare_chain", "worker", "--queues", queue]
        argv += ["--pool", "prefork", "--concurrency", str(self.plan.concurrency), "--loglevel", "INFO"]
        argv += ["--hostname", f"bare-{queue}.{uuid.uuid4().hex[:6]}@%h", "--without-mingle", "--without-gossip"]
        return self.start(f"bare-{queue}-worker", argv, redis_server)

    def stop_stack(self, stack: Stack) -> None:
        for process in stack.services.values():  # all at once: the warm shutdowns overlap
            process.terminate()
        for process in stack.services.values():
            self.stop(process)


class Profiler:
    """`py-spy record` on every Python process of a stack (pool children and gunicorn workers
    included) for the length of one step; raw collapsed stacks, one file per process."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.running: list[tuple[subprocess.Popen[bytes], Path, str]] = []

    def start(self, stack: Stack, seconds: float) -> None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for service, processes in stack.processes().items():
            if service == "redis":
                continue
            for process in processes:
                out = self.out_dir / f"{stack.kind}-{service}-{process.pid}.txt"
                argv = [py_spy, "record", "--pid", str(process.pid), "--rate", "200", "--nonblocking"]
                argv += ["--duration", str(int(seconds) + 3), "--format", "raw", "--output", str(out)]
                popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.running.append((popen, out, f"{stack.kind} {service} {process.pid}"))

    def finish(self) -> list[dict[str, Any]]:
        """Wait for the recorders; per process, its active samples and the frames (inclusive) that
        took at least 3 % of them, the outermost frames (the process's main loop) left out."""
        summaries = []
        for popen, out, label in self.running:
            popen.wait(timeout=120)
            total, inclusive = read_collapsed(out)
            top = [
                {"frame": frame, "share": round(count / total, 3)}
                for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])
                if total and 0.03 <= count / total <= 0.9
            ]
            summaries.append({"process": label, "samples": total, "file": out.name, "frames": top[:40]})
        self.running.clear()
        return summaries


def read_collapsed(path: Path) -> tuple[int, dict[str, int]]:
    """py-spy's raw output (`frame;frame;... count` per line): total samples and, per frame, the
    samples whose stack contains it."""
    total = 0
    inclusive: dict[str, int] = {}
    if not path.exists():
        return 0, {}
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        for frame in set(stack.split(";")):
            inclusive[frame] = inclusive.get(frame, 0) + count
    return total, inclusive
