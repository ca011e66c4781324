"""The benchmark: real redis-server, real worker processes, real gunicorn; ratios against baselines.

Run from the repository root after `./dev setup`:

    .venv/py3.11/bin/python -m bench            # full mode, ~10 minutes; also writes bench/results.json
    .venv/py3.11/bin/python -m bench --quick    # CI smoke run, < 60 s; checks only that every key is there

Phases (each prints progress lines on stderr):
1. worker path: N `orders.process` messages (and their orders) preloaded, then the project's `worker`
   console script is started and timed until the queue and the unacked set are empty; the same for a
   bare Celery app (bench/bare_celery.py) draining identical messages with a no-op task.
2. accept path: `wrk` POSTs orders at 1, 8 and 32 connections to the `order-service` console script
   and to a bare Flask app doing one send_task (bench/bare_flask.py) under the same gunicorn config.
3. end to end: worker + notification-service + order-service; orders POSTed at fixed open-loop rates;
   latency = `updated_at - created_at` of each order once `notification == sent`; then a ramp of
   rates to find where the stack saturates.
4. Redis ceiling: `redis-benchmark` LPUSH/RPOP against the same redis-server.

Outputs: bench/out/results.json, bench/out/results.md, bench/out/bench.png (and, in full mode, the
committed copies bench/results.json, bench/results.md, bench/results.png).
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import io
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench.loadgen import BODY
from common_tasks.celery_app import create_celery_app
from common_tasks.config import CommonSettings
from common_tasks.schemas import OrderRequest, ProcessOrder
from common_tasks.tasks import send_process_order
from order_store.store import OrderStore
from stack_testkit import RedisServer, console_script, free_port, http_request, wait_until

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
POST_LUA = BENCH_DIR / "post.lua"

# Targets are reported, never asserted.
TARGET_WORKER_RATIO = 0.9
TARGET_ACCEPT_RATIO = 0.9
TARGET_E2E_P99_MS_AT_50 = 25.0
# A ramp step fails when fewer than this share of the offered rate completes, or p99 exceeds the limit.
SATURATION_ACHIEVED_SHARE = 0.95
SATURATION_P99_LIMIT_MS = 500.0


@dataclass(frozen=True)
class Plan:
    mode: str
    worker_tasks: int
    worker_reps: int
    concurrency: int
    web_concurrency: int
    web_threads: int
    accept_levels: tuple[int, ...]
    accept_seconds: int
    accept_warmup_seconds: int
    accept_reps: int
    e2e_rates: tuple[int, ...]
    e2e_seconds: float
    saturation_rates: tuple[int, ...]
    saturation_seconds: float
    settle_timeout: float
    redis_requests: int


FULL = Plan(
    mode="full",
    worker_tasks=2000,
    worker_reps=3,
    concurrency=2,
    web_concurrency=2,
    web_threads=4,
    accept_levels=(1, 8, 32),
    accept_seconds=10,
    accept_warmup_seconds=2,
    accept_reps=2,
    e2e_rates=(50, 200),
    e2e_seconds=20.0,
    saturation_rates=(20, 30, 40, 50, 60, 80, 100, 150, 200, 300, 400),
    saturation_seconds=12.0,
    settle_timeout=240.0,
    redis_requests=200_000,
)

# The same measures, briefly: proves the benchmark still works (CI), says nothing about speed.
QUICK = replace(
    FULL,
    mode="quick",
    worker_tasks=200,
    worker_reps=1,
    accept_seconds=1,
    accept_warmup_seconds=1,
    accept_reps=1,
    e2e_seconds=1.5,
    saturation_rates=(20,),
    saturation_seconds=1.5,
    settle_timeout=40.0,
    redis_requests=20_000,
)

_START = time.monotonic()


def progress(message: str) -> None:
    print(f"[bench {time.monotonic() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of `values` (any order); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def ratio(project: float | None, baseline: float | None) -> float | None:
    if project is None or not baseline:
        return None
    return round(project / baseline, 3)


# --- processes -------------------------------------------------------------------------------------


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

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        try:  # pool children left behind, if any
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Bench:
    def __init__(self, plan: Plan, out_dir: Path) -> None:
        self.plan = plan
        self.out_dir = out_dir
        self.log_dir = out_dir / "logs"
        if self.log_dir.exists():
            shutil.rmtree(self.log_dir)
        self.log_dir.mkdir(parents=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="bench-"))
        self.redis_server = RedisServer(self.scratch / "redis")
        self.processes: list[Process] = []

    # environment and processes

    def env(self, **overrides: str) -> dict[str, str]:
        env = dict(os.environ)
        pythonpath = [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env.update(
            PYTHONPATH=os.pathsep.join(pythonpath),
            PYTHONUNBUFFERED="1",
            CELERY_BROKER_URL=self.redis_server.url(0),
            CELERY_RESULT_BACKEND=self.redis_server.url(1),
            LOG_LEVEL="INFO",
            WORKER_CONCURRENCY=str(self.plan.concurrency),
            WEB_CONCURRENCY=str(self.plan.web_concurrency),
            WEB_THREADS=str(self.plan.web_threads),
            HOST="127.0.0.1",
        )
        env.update(overrides)
        return env

    def start(self, name: str, argv: list[str], **env: str) -> Process:
        process = Process(name, argv, self.env(**env), self.log_dir)
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

    # phase 1: worker path

    def preload(self, kind: str, count: int) -> list[str]:
        order = OrderRequest.model_validate_json(BODY)
        ids = [uuid.uuid4().hex for _ in range(count)]
        if kind == "project":
            settings = CommonSettings(
                CELERY_BROKER_URL=self.redis_server.url(0), CELERY_RESULT_BACKEND=self.redis_server.url(1)
            )
            app = create_celery_app(settings, "bench-loader")
            store = OrderStore.from_url(settings.order_store_url)
            for order_id in ids:
                store.create(order_id, order)
                send_process_order(
                    app, ProcessOrder(order_id=order_id, customer_email=order.customer_email, items=order.items)
                )
            app.close()
            store.client.close()
        else:
            from bench import bare_celery

            bare_celery.app.conf.broker_url = self.redis_server.url(0)
            for order_id in ids:
                payload = ProcessOrder(order_id=order_id, customer_email=order.customer_email, items=order.items)
                bare_celery.send(payload.model_dump(mode="json"))
            bare_celery.app.close()
        return ids

    def drain_once(self, kind: str, run: int) -> dict[str, Any]:
        count = self.plan.worker_tasks
        client = self.redis()
        client.flushall()
        self.preload(kind, count)
        queued = client.llen("orders")
        if queued != count:
            raise RuntimeError(f"preloaded {count} messages but the orders queue holds {queued}")
        process = self.start_project_worker() if kind == "project" else self.start_bare_worker()
        pipe = client.pipeline(transaction=False)
        started = finished = None
        empty_seen = 0
        deadline = time.monotonic() + 60 + count / 50
        while True:
            queue_length, unacked = pipe.llen("orders").hlen("unacked").execute()
            now = time.perf_counter()
            if started is None and queue_length < count:
                started = now
            if queue_length == 0 and unacked == 0:
                empty_seen += 1
                finished = finished or now
                if empty_seen >= 3:  # a message between BRPOP and the unacked hash is invisible for a moment
                    break
            else:
                empty_seen, finished = 0, None
            if not process.alive():
                raise RuntimeError(f"{kind} worker exited:\n{process.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} worker did not drain {count} tasks in time:\n{process.log()[-3000:]}")
            time.sleep(0.002)
        assert started is not None and finished is not None
        elapsed = finished - started
        result: dict[str, Any] = {
            "run": run,
            "tasks": count,
            "seconds": round(elapsed, 3),
            "tasks_per_s": round(count / elapsed, 1),
        }
        if kind == "project":
            pipe = client.pipeline(transaction=False)
            for order_id in client.scan_iter("order:*", count=1000):
                pipe.hget(order_id, "status")
            statuses = pipe.execute()
            result["completed_orders"] = sum(1 for status in statuses if status == "completed")
            result["notifications_published"] = client.llen("notifications")
        self.stop(process)
        progress(f"worker path: {kind} run {run}: {count} tasks in {elapsed:.2f} s = {count / elapsed:.0f}/s")
        return result

    def worker_path(self) -> dict[str, Any]:
        runs: dict[str, list[dict[str, Any]]] = {"project": [], "baseline": []}
        for run in range(1, self.plan.worker_reps + 1):
            order = ("baseline", "project") if run % 2 else ("project", "baseline")
            for kind in order:
                runs[kind].append(self.drain_once("project" if kind == "project" else "bare", run))
        project = statistics.median(r["tasks_per_s"] for r in runs["project"])
        baseline = statistics.median(r["tasks_per_s"] for r in runs["baseline"])
        return {
            "description": "orders.process drained by the `worker` console script vs a bare Celery no-op task",
            "tasks_per_run": self.plan.worker_tasks,
            "concurrency": self.plan.concurrency,
            "pool": "prefork",
            "project": {"tasks_per_s": project, "runs": runs["project"]},
            "baseline": {"tasks_per_s": baseline, "runs": runs["baseline"]},
            "ratio": ratio(project, baseline),
            "target": TARGET_WORKER_RATIO,
        }

    # phase 2: accept path

    def load_closed(self, url: str, connections: int, seconds: int) -> dict[str, Any]:
        if shutil.which("wrk"):
            argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(POST_LUA)]
            output = subprocess.run([*argv, f"{url}/orders"], capture_output=True, text=True, check=True).stdout
            line = next(line for line in output.splitlines() if line.startswith("WRK_JSON "))
            data = json.loads(line.removeprefix("WRK_JSON "))
            errors = sum(data[key] for key in ("connect", "read", "write", "status", "timeout"))
            return {
                "requests": data["requests"],
                "errors": errors,
                "rps": round(data["requests"] / (data["duration_us"] / 1e6), 1),
                "p50_ms": round(data["p50_us"] / 1000, 3),
                "p99_ms": round(data["p99_us"] / 1000, 3),
                "max_ms": round(data["max_us"] / 1000, 3),
            }
        with tempfile.NamedTemporaryFile(suffix=".json", dir=self.scratch, delete=False) as handle:
            out = handle.name
        argv = [sys.executable, "-m", "bench.loadgen", "closed", "--url", url, "--concurrency", str(connections)]
        subprocess.run([*argv, "--duration", str(seconds), "--out", out], check=True, cwd=REPO_ROOT, env=self.env())
        data = json.loads(Path(out).read_text())
        latencies = data["latencies"]
        return {
            "requests": data["requests"],
            "errors": data["errors"],
            "rps": round(data["requests"] / data["elapsed"], 1),
            "p50_ms": rounded(1000 * (percentile(latencies, 50) or 0), 3),
            "p99_ms": rounded(1000 * (percentile(latencies, 99) or 0), 3),
            "max_ms": rounded(1000 * max(latencies, default=0), 3),
        }

    def accept_once(self, kind: str, run: int) -> dict[int, dict[str, Any]]:
        self.redis().flushall()
        port = str(free_port())
        if kind == "project":
            process = self.start("order-service", [console_script("order-service")], PORT=port)
        else:
            process = self.start("bare-flask", [sys.executable, "-m", "bench.bare_flask"], PORT=port)
        url = f"http://127.0.0.1:{port}"
        process.wait_http(f"{url}/healthz")
        self.load_closed(url, 8, self.plan.accept_warmup_seconds)  # warm both gunicorn workers
        results = {}
        for connections in self.plan.accept_levels:
            self.redis().delete("orders")
            result = self.load_closed(url, connections, self.plan.accept_seconds)
            results[connections] = result
            progress(
                f"accept path: {kind} run {run}, {connections:>2} connections: {result['rps']:.0f} req/s, "
                f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, errors {result['errors']}"
            )
        self.stop(process)
        return results

    def accept_path(self) -> dict[str, Any]:
        runs: dict[str, list[dict[int, dict[str, Any]]]] = {"project": [], "baseline": []}
        for run in range(1, self.plan.accept_reps + 1):
            order = ("baseline", "project") if run % 2 else ("project", "baseline")
            for kind in order:
                runs[kind].append(self.accept_once("project" if kind == "project" else "bare", run))
        levels = {}
        for connections in self.plan.accept_levels:
            entry: dict[str, Any] = {}
            for kind in ("project", "baseline"):
                samples = [run[connections] for run in runs[kind]]
                entry[kind] = {
                    key: round(statistics.median(sample[key] for sample in samples), 3)
                    for key in ("rps", "p50_ms", "p99_ms", "max_ms")
                }
                entry[kind]["errors"] = sum(sample["errors"] for sample in samples)
                entry[kind]["runs"] = samples
            entry["ratio_rps"] = ratio(entry["project"]["rps"], entry["baseline"]["rps"])
            entry["ratio_p50"] = ratio(entry["project"]["p50_ms"], entry["baseline"]["p50_ms"])
            entry["ratio_p99"] = ratio(entry["project"]["p99_ms"], entry["baseline"]["p99_ms"])
            levels[str(connections)] = entry
        return {
            "description": "POST /orders: order-service under gunicorn vs a bare Flask endpoint doing one send_task",
            "tool": "wrk" if shutil.which("wrk") else "bench.loadgen (closed loop)",
            "seconds_per_level": self.plan.accept_seconds,
            "gunicorn": {
                "worker_class": "gthread",
                "workers": self.plan.web_concurrency,
                "threads": self.plan.web_threads,
            },
            "levels": levels,
            "target": TARGET_ACCEPT_RATIO,
        }

    # phase 3: end to end

    def offer(self, url: str, rate: float, seconds: float) -> dict[str, Any]:
        with tempfile.NamedTemporaryFile(suffix=".json", dir=self.scratch, delete=False) as handle:
            out = handle.name
        argv = [sys.executable, "-m", "bench.loadgen", "open", "--url", url, "--rate", str(rate)]
        subprocess.run([*argv, "--duration", str(seconds), "--out", out], check=True, cwd=REPO_ROOT, env=self.env())
        return json.loads(Path(out).read_text())

    def settle(self, order_ids: list[str]) -> dict[str, tuple[str, float, float]]:
        """Wait until every order's notification is recorded (or the timeout); returns what was seen."""
        client = self.redis()
        done: dict[str, tuple[str, float, float]] = {}
        pending = list(order_ids)
        deadline = time.monotonic() + self.plan.settle_timeout
        while pending and time.monotonic() < deadline:
            pipe = client.pipeline(transaction=False)
            for order_id in pending:
                pipe.hmget(f"order:{order_id}", "notification", "created_at", "updated_at")
            still = []
            for order_id, (state, created, updated) in zip(pending, pipe.execute(), strict=True):
                if state in ("sent", "failed"):
                    done[order_id] = (state, float(created), float(updated))
                else:
                    still.append(order_id)
            pending = still
            if pending:
                time.sleep(0.25)
        return done

    def e2e_step(self, url: str, rate: float, seconds: float) -> dict[str, Any]:
        data = self.offer(url, rate, seconds)
        records = data["records"]
        accepted = {record[3]: record for record in records if record[2] == 202 and record[3]}
        done = self.settle(list(accepted))
        sent = [(order_id, v) for order_id, v in done.items() if v[0] == "sent"]
        e2e = [1000 * (updated - created) for _, (_, created, updated) in sent]
        from_post = [1000 * (updated - accepted[order_id][0]) for order_id, (_, _, updated) in sent]
        http = [1000 * record[1] for record in records if record[1] is not None]
        if sent:
            window = max(v[2] for _, v in sent) - min(v[1] for _, v in sent)
            achieved = len(sent) / max(window, 1e-9) if len(sent) > 1 else None
        else:
            achieved = None
        return {
            "offered_per_s": rate,
            "seconds": seconds,
            "sent": data["sent"],
            "accepted": len(accepted),
            "http_statuses": {str(code): count for code, count in sorted(Counter(r[2] for r in records).items())},
            "notified": len(sent),
            "notification_failed": sum(1 for v in done.values() if v[0] == "failed"),
            "unfinished": len(accepted) - len(done),
            "offered_elapsed_s": round(data["elapsed"], 3),
            "achieved_per_s": rounded(achieved, 1),
            "p50_ms": rounded(percentile(e2e, 50)),
            "p90_ms": rounded(percentile(e2e, 90)),
            "p99_ms": rounded(percentile(e2e, 99)),
            "max_ms": rounded(max(e2e, default=None) if e2e else None),
            "from_post_p50_ms": rounded(percentile(from_post, 50)),
            "from_post_p99_ms": rounded(percentile(from_post, 99)),
            "http_p50_ms": rounded(percentile(http, 50)),
            "http_p99_ms": rounded(percentile(http, 99)),
        }

    def step_ok(self, step: dict[str, Any]) -> bool:
        achieved = step["achieved_per_s"] or 0.0
        p99 = step["p99_ms"]
        return (
            step["accepted"] == step["sent"]
            and step["unfinished"] == 0
            and achieved >= SATURATION_ACHIEVED_SHARE * step["offered_per_s"]
            and p99 is not None
            and p99 <= SATURATION_P99_LIMIT_MS
        )

    def end_to_end(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.redis().flushall()
        worker = self.start_project_worker()
        notifier_heartbeat = str(self.scratch / "notification.heartbeat")
        notifier = self.start(
            "notification-service", [console_script("notification-service")], WORKER_HEARTBEAT_FILE=notifier_heartbeat
        )
        port = str(free_port())
        web = self.start("order-service", [console_script("order-service")], PORT=port)
        url = f"http://127.0.0.1:{port}"
        worker.wait_log(" ready.")
        notifier.wait_log(" ready.")
        web.wait_http(f"{url}/healthz")
        warm = self.e2e_step(url, 20, 0.5)  # imports, connections, pool children
        progress(f"end to end: warm-up done ({warm['notified']} orders)")

        steps = []
        for rate in self.plan.e2e_rates:
            step = self.e2e_step(url, rate, self.plan.e2e_seconds)
            steps.append(step)
            progress(self.describe_step("end to end", step))
        ramp = []
        saturation = None
        for rate in self.plan.saturation_rates:
            step = self.e2e_step(url, rate, self.plan.saturation_seconds)
            step["ok"] = self.step_ok(step)
            ramp.append(step)
            progress(self.describe_step("saturation ramp", step) + ("" if step["ok"] else "  <- saturated"))
            if not step["ok"]:
                break
            saturation = rate
        for process in (web, notifier, worker):
            self.stop(process)
        at_50 = next((step for step in steps if step["offered_per_s"] == 50), None)
        e2e = {
            "description": "POST /orders -> notification recorded; latency = updated_at - created_at of the order",
            "seconds_per_rate": self.plan.e2e_seconds,
            "rates": steps,
            "target_p99_ms_at_50": TARGET_E2E_P99_MS_AT_50,
            "p99_ms_at_50": at_50["p99_ms"] if at_50 else None,
        }
        last_ok = bool(ramp) and ramp[-1]["ok"]
        sat = {
            "description": (
                f"highest offered rate whose step completed >= {SATURATION_ACHIEVED_SHARE:.0%} of it with every order "
                f"accepted and notified and p99 <= {SATURATION_P99_LIMIT_MS:.0f} ms"
            ),
            "seconds_per_step": self.plan.saturation_seconds,
            "steps": ramp,
            "saturation_rate": saturation,
            "not_reached": last_ok,
        }
        return e2e, sat

    @staticmethod
    def describe_step(phase: str, step: dict[str, Any]) -> str:
        return (
            f"{phase}: offered {step['offered_per_s']:.0f}/s -> achieved {step['achieved_per_s'] or 0:.0f}/s, "
            f"{step['notified']}/{step['sent']} notified, p50 {step['p50_ms']} ms, p99 {step['p99_ms']} ms, "
            f"max {step['max_ms']} ms (HTTP p99 {step['http_p99_ms']} ms)"
        )

    # phase 4: Redis ceiling

    def redis_ceiling(self) -> dict[str, Any]:
        if not shutil.which("redis-benchmark"):
            raise RuntimeError("redis-benchmark is not on PATH (Debian/Ubuntu: apt-get install redis-tools)")
        self.redis().flushall()
        results: dict[str, Any] = {}
        for clients, requests in ((50, self.plan.redis_requests), (1, max(10_000, self.plan.redis_requests // 10))):
            argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(self.redis_server.port), "-t", "lpush,rpop"]
            argv += ["-n", str(requests), "-c", str(clients), "--csv"]
            output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            for row in csv.DictReader(io.StringIO(output)):
                name = f"{row['test'].lower()}_c{clients}"
                results[name] = {"ops_per_s": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"])}
                progress(f"redis ceiling: {row['test']} with {clients} client(s): {float(row['rps']):.0f} ops/s")
        self.redis().flushall()
        return {"description": "redis-benchmark against the benchmark's redis-server", "results": results}


# --- report ----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    memory_kib = 0
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "cpu": cpu_model,
        "os": platform.platform(),
    }


def versions() -> dict[str, str]:
    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    def command(argv: list[str]) -> str:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError:
            return "missing"
        return (result.stdout or result.stderr).strip().splitlines()[0] if (result.stdout or result.stderr) else ""

    redis_version = command(["redis-server", "--version"])
    redis_version = next((part[2:] for part in redis_version.split() if part.startswith("v=")), redis_version)
    return {
        "python": platform.python_version(),
        "celery": dist("celery"),
        "kombu": dist("kombu"),
        "redis_server": redis_version,
        "redis_py": dist("redis"),
        "flask": dist("flask"),
        "gunicorn": dist("gunicorn"),
        "wrk": command(["wrk", "--version"]).split(" [")[0] if shutil.which("wrk") else "missing",
    }


REQUIRED_KEYS: list[tuple[str, ...]] = [
    ("date",),
    ("mode",),
    ("machine", "cores"),
    ("machine", "memory_gib"),
    ("versions", "python"),
    ("versions", "celery"),
    ("versions", "redis_server"),
    ("worker_path", "project", "tasks_per_s"),
    ("worker_path", "baseline", "tasks_per_s"),
    ("worker_path", "ratio"),
    *[
        ("accept_path", "levels", level, kind, key)
        for level in ("1", "8", "32")
        for kind in ("project", "baseline")
        for key in ("rps", "p50_ms", "p99_ms")
    ],
    *[("accept_path", "levels", level, "ratio_rps") for level in ("1", "8", "32")],
    ("end_to_end", "rates"),
    ("end_to_end", "p99_ms_at_50"),
    ("saturation", "saturation_rate"),
    ("saturation", "steps"),
    ("redis_ceiling", "results", "lpush_c50", "ops_per_s"),
    ("redis_ceiling", "results", "rpop_c50", "ops_per_s"),
    ("summary",),
]


def missing_keys(results: dict[str, Any]) -> list[str]:
    missing = []
    for path in REQUIRED_KEYS:
        node: Any = results
        for key in path:
            if not isinstance(node, dict) or key not in node:
                missing.append(".".join(path))
                break
            node = node[key]
    rates = {step.get("offered_per_s") for step in results.get("end_to_end", {}).get("rates", [])}
    for rate in (50, 200):
        if rate not in rates:
            missing.append(f"end_to_end.rates[{rate}/s]")
    for step in results.get("end_to_end", {}).get("rates", []):
        for key in ("p50_ms", "p99_ms", "max_ms", "achieved_per_s"):
            if step.get(key) is None:
                missing.append(f"end_to_end.rates[{step.get('offered_per_s')}/s].{key}")
    for measure in ("worker_path", "accept_path"):
        if measure in results and results[measure].get("ratio", 0) is None:
            missing.append(f"{measure}.ratio (no value)")
    return missing


def summary_row(
    measure: str, project: Any = None, baseline: Any = None, ratio: Any = None, target: str = "", met: Any = None
) -> dict[str, Any]:
    return {"measure": measure, "project": project, "baseline": baseline, "ratio": ratio, "target": target, "met": met}


def at_least(ratio: float | None, target: float) -> bool | None:
    return None if ratio is None else ratio >= target


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    worker = results["worker_path"]
    rows = [
        summary_row(
            f"worker path: tasks/s drained (prefork c={worker['concurrency']})",
            worker["project"]["tasks_per_s"],
            worker["baseline"]["tasks_per_s"],
            worker["ratio"],
            f">= {TARGET_WORKER_RATIO}x",
            at_least(worker["ratio"], TARGET_WORKER_RATIO),
        )
    ]
    for level, entry in results["accept_path"]["levels"].items():
        project, baseline = entry["project"], entry["baseline"]
        rows.append(
            summary_row(
                f"accept path: req/s at {level} connection(s)",
                project["rps"],
                baseline["rps"],
                entry["ratio_rps"],
                f">= {TARGET_ACCEPT_RATIO}x",
                at_least(entry["ratio_rps"], TARGET_ACCEPT_RATIO),
            )
        )
        for pct in ("p50", "p99"):
            rows.append(
                summary_row(
                    f"accept path: {pct} ms at {level} connection(s)",
                    project[f"{pct}_ms"],
                    baseline[f"{pct}_ms"],
                    entry[f"ratio_{pct}"],
                )
            )
    for step in results["end_to_end"]["rates"]:
        target = step["offered_per_s"] == 50
        rows.append(
            summary_row(
                f"end to end at {step['offered_per_s']:.0f}/s: p50 / p99 / max ms, achieved/s",
                f"{step['p50_ms']} / {step['p99_ms']} / {step['max_ms']}, {step['achieved_per_s']}",
                target=f"p99 < {TARGET_E2E_P99_MS_AT_50:.0f} ms" if target else "",
                met=(step["p99_ms"] is not None and step["p99_ms"] < TARGET_E2E_P99_MS_AT_50) if target else None,
            )
        )
    sat = results["saturation"]
    rate = sat["saturation_rate"]
    rows.append(
        summary_row(
            "end to end: saturation rate (orders/s)",
            None if rate is None else (f">= {rate}" if sat["not_reached"] else rate),
        )
    )
    for name, value in results["redis_ceiling"]["results"].items():
        rows.append(
            summary_row(f"redis ceiling: {name.replace('_c', ' ops/s, clients=')}", baseline=value["ops_per_s"])
        )
    return rows


def markdown(results: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "**no**"
        if isinstance(value, float):
            return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:,.1f}"
        return str(value)

    m, v = results["machine"], results["versions"]
    lines = [
        f"Benchmark ({results['mode']} mode), {results['date']}: {m['cores']} cores, {m['memory_gib']} GiB, "
        f"{m['cpu']}; "
        f"Python {v['python']}, Celery {v['celery']}, kombu {v['kombu']}, Redis {v['redis_server']}, "
        f"gunicorn {v['gunicorn']}, {v['wrk']}.",
        "",
        "| measure | project | baseline | ratio | target | met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in results["summary"]:
        lines.append(
            f"| {row['measure']} | {cell(row['project'])} | {cell(row['baseline'])} | {cell(row['ratio'])} "
            f"| {row['target']} | {cell(row['met'])} |"
        )
    lines += [
        "",
        "Baselines: worker path = bare Celery app (bench/bare_celery.py, same settings, no-op task); accept path = "
        "bare Flask endpoint doing one send_task under the same gunicorn settings (bench/bare_flask.py). "
        "Ratios are project / baseline (for latencies, > 1 means slower).",
        "",
        "| end to end step | offered/s | achieved/s | notified/sent | p50 ms | p99 ms | max ms | HTTP p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, steps in (("fixed rate", results["end_to_end"]["rates"]), ("ramp", results["saturation"]["steps"])):
        for step in steps:
            lines.append(
                f"| {label} | {step['offered_per_s']:.0f} | {cell(step['achieved_per_s'])} | "
                f"{step['notified']}/{step['sent']} | {cell(step['p50_ms'])} | {cell(step['p99_ms'])} | "
                f"{cell(step['max_ms'])} | {cell(step['http_p99_ms'])} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(
        results["end_to_end"]["rates"] + results["saturation"]["steps"], key=lambda step: step["offered_per_s"]
    )
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    rates = [step["offered_per_s"] for step in steps]
    for key, style in (("p50_ms", "o-"), ("p99_ms", "s-"), ("max_ms", "^--")):
        left.plot(
            rates, [step[key] if step[key] is not None else float("nan") for step in steps], style, label=key[:-3]
        )
    left.axhline(
        TARGET_E2E_P99_MS_AT_50,
        color="grey",
        linestyle=":",
        label=f"target p99 at 50/s ({TARGET_E2E_P99_MS_AT_50:.0f} ms)",
    )
    left.set_yscale("log")
    left.set_xlabel("offered orders/s")
    left.set_ylabel("POST -> notification recorded (ms)")
    left.set_title("End-to-end latency vs offered rate")
    left.legend()
    left.grid(True, which="both", alpha=0.3)

    labels = ["worker\ntasks/s"]
    project = [results["worker_path"]["project"]["tasks_per_s"]]
    baseline = [results["worker_path"]["baseline"]["tasks_per_s"]]
    ratios = [results["worker_path"]["ratio"]]
    for level, entry in results["accept_path"]["levels"].items():
        labels.append(f"accept req/s\n{level} conn")
        project.append(entry["project"]["rps"])
        baseline.append(entry["baseline"]["rps"])
        ratios.append(entry["ratio_rps"])
    xs = range(len(labels))
    width = 0.38
    right.bar([x - width / 2 for x in xs], project, width, label="project")
    right.bar([x + width / 2 for x in xs], baseline, width, label="baseline (bare)")
    for x, p, r in zip(xs, project, ratios, strict=True):
        right.annotate(f"{r:.2f}x" if r is not None else "", (x - width / 2, p), ha="center", va="bottom")
    right.set_xticks(list(xs), labels)
    right.set_ylabel("per second")
    right.set_title("Throughput vs baselines (ratio = project / baseline)")
    right.legend()
    right.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"celery-stack benchmark ({results['mode']}, {results['date']}, {results['machine']['cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(results: dict[str, Any], out_dir: Path, committed: bool) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "results.md").write_text(table)
    plot(results, out_dir / "bench.png")
    if committed:
        shutil.copyfile(out_dir / "results.json", BENCH_DIR / "results.json")
        shutil.copyfile(out_dir / "results.md", BENCH_DIR / "results.md")
        shutil.copyfile(out_dir / "bench.png", BENCH_DIR / "results.png")
    return table


def run(plan: Plan, out_dir: Path, phases: set[str]) -> dict[str, Any]:
    bench = Bench(plan, out_dir)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": plan.mode,
        "machine": machine(),
        "versions": versions(),
        "plan": asdict(plan),
    }
    phase_table: list[tuple[str, Callable[[], Any]]] = [
        ("worker", bench.worker_path),
        ("accept", bench.accept_path),
        ("e2e", bench.end_to_end),
        ("redis", bench.redis_ceiling),
    ]
    try:
        bench.redis_server.start()
        progress(f"{plan.mode} mode; redis-server on port {bench.redis_server.port}; logs in {bench.log_dir}")
        for name, function in phase_table:
            if name not in phases:
                continue
            progress(f"phase {name}: start")
            value = function()
            if name == "worker":
                results["worker_path"] = value
            elif name == "accept":
                results["accept_path"] = value
            elif name == "e2e":
                results["end_to_end"], results["saturation"] = value
            else:
                results["redis_ceiling"] = value
    finally:
        bench.stop_everything()
    progress(f"done in {time.monotonic() - _START:.0f} s")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke run (< 60 s): checks only that every key is there"
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default bench/out)")
    parser.add_argument(
        "--only",
        default="worker,accept,e2e,redis",
        help="comma-separated phases to run (worker, accept, e2e, redis); partial runs are never committed",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    phases = {phase.strip() for phase in args.only.split(",") if phase.strip()}
    results = run(plan, args.out, phases)
    complete = phases == {"worker", "accept", "e2e", "redis"}
    if not complete:
        print(json.dumps(results, indent=2))
        return 0
    results["summary"] = summary_rows(results)
    table = write_outputs(results, args.out, committed=not args.quick)
    print(table)
    missing = missing_keys(results)
    if missing:
        print(f"bench: results incomplete, missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"bench: results in {args.out / 'results.json'}" + ("" if args.quick else " and bench/results.json"))
    return 0
