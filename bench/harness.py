"""The processes of a benchmark run: Redis, the project's console scripts and the baselines."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import redis

from bench.plan import REPO_ROOT, Plan
from stack_testkit import RedisServer, console_script, http_request, wait_until


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


class Harness:
    """The processes and the Redis of one run; the phases (mixins) use them."""

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
