"""The development-only test kit: a pytest plugin (the `pytest11` entry point) every package's tests
load, and helpers the benchmark uses. No image contains it, and it names no service.

It runs the real things: a `redis-server` from PATH on a free loopback port, and console scripts as
subprocesses, exactly as the images run them. No eager mode, no fake broker. A service is ready
when its own `<script> healthcheck` says so, as in compose.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import redis

if TYPE_CHECKING:
    from celery import Celery

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float, message: str, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy; fail the test with `message` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (redis.RedisError, OSError):
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s: {message}")
        time.sleep(interval)


def console_script(name: str) -> str:
    """The installed console script `name`: next to this interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"console script {name!r} not found; install the packages first (./dev test does)")
    return found


class RedisServer:
    """A real redis-server on 127.0.0.1, stoppable and restartable on the same port and data dir."""

    def __init__(
        self, directory: Path, port: int | None = None, password: str | None = None, replica_of: int | None = None
    ) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not on PATH (Debian/Ubuntu: apt-get install redis-server)")
        self.directory = directory
        self.port = port or free_port()
        self.password = password
        self.replica_of = replica_of  # the port of a master on 127.0.0.1 this server replicates at start
        self.appendonly = False
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis.from_url(self.url(db), decode_responses=True, socket_connect_timeout=1)

    def celery_app(self, name: str = "test") -> Celery:
        """A Celery app with the services' configuration on this server, to publish test messages.
        Uses common-tasks, which every test environment of the repository has (not a dependency of
        the kit, whose tests it serves)."""
        from common_tasks.celery_app import create_celery_app
        from common_tasks.config import CommonSettings

        settings = CommonSettings(CELERY_BROKER_URL=self.url(0), CELERY_RESULT_BACKEND=self.url(1))
        return create_celery_app(settings, name)

    def start(self, appendonly: bool | None = None) -> RedisServer:
        if appendonly is not None:
            self.appendonly = appendonly
        command = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.client().ping(), 10, f"redis-server on port {self.port} did not start")
        return self

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: what losing the host looks like to its clients (no flush, no goodbye)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=15)
        self.process = None


class SentinelGroup:
    """A Redis master, its replicas and Redis Sentinels watching them (`redis-server --sentinel`, each
    with a config file of its own, which Sentinel rewrites), all on 127.0.0.1, with short failure
    detection so that a failover takes seconds. `url()` is the services' sentinel:// URL."""

    MASTER_NAME = "stack-master"

    def __init__(
        self,
        directory: Path,
        replicas: int = 1,
        sentinels: int = 3,
        # Not 1000: Sentinels ping every second, so a newly promoted master that misses one ping
        # under CPU load is called down at once, and a second failover can promote an empty server.
        down_after_ms: int = 2000,
        failover_timeout_ms: int = 5000,
    ) -> None:
        self.directory = directory
        self.master = RedisServer(directory / "redis-0")
        self.replicas = [
            RedisServer(directory / f"redis-{index + 1}", replica_of=self.master.port) for index in range(replicas)
        ]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.sentinel_processes: list[subprocess.Popen[bytes]] = []

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    def url(self, db: int = 0) -> str:
        return ";".join(f"sentinel://127.0.0.1:{port}/{db}" for port in self.sentinel_ports)

    def sentinel_client(self, index: int) -> redis.Redis:
        port = self.sentinel_ports[index]
        return redis.Redis(port=port, decode_responses=True, socket_connect_timeout=1, socket_timeout=2)

    def master_port(self) -> int | None:
        """The master's port as most Sentinels name it (None while they disagree or are down)."""
        answers = []
        for index in range(len(self.sentinel_ports)):
            try:
                address = self.sentinel_client(index).sentinel_get_master_addr_by_name(self.MASTER_NAME)
            except (redis.RedisError, OSError):
                continue
            if address:
                answers.append(int(address[1]))
        for port in answers:
            if answers.count(port) * 2 > len(self.sentinel_ports):
                return port
        return None

    def online_replicas(self, port: int) -> int:
        """Replicas of the server on `port` that finished their sync (only those acknowledge WAIT)."""
        replication = self.server_on(port).client().info("replication")
        return sum(
            1
            for key, value in replication.items()
            if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
        )

    def server_on(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    def start(self) -> SentinelGroup:
        self.master.start()
        for replica in self.replicas:
            replica.start()
        wait_until(
            lambda: self.online_replicas(self.master.port) == len(self.replicas),
            30,
            "the replicas never finished their first sync with the master",
        )
        for index, port in enumerate(self.sentinel_ports):
            directory = self.directory / f"sentinel-{index}"
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / "sentinel.conf"
            name = self.MASTER_NAME
            quorum = len(self.sentinel_ports) // 2 + 1
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\nlogfile {directory / 'sentinel.log'}\n"
                f"sentinel monitor {name} 127.0.0.1 {self.master.port} {quorum}\n"
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {name} 1\n"
            )
            command = ["redis-server", str(config), "--sentinel"]
            self.sentinel_processes.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

        def all_known(index: int) -> bool:
            state = self.sentinel_client(index).sentinel_master(self.MASTER_NAME)
            others = len(self.sentinel_ports) - 1
            return bool(state["num-other-sentinels"] == others and state["num-slaves"] == len(self.replicas))

        for index in range(len(self.sentinel_ports)):
            wait_until(lambda i=index: all_known(i), 30, f"sentinel {index} never saw the whole group")
        return self

    def stop(self) -> None:
        for process in self.sentinel_processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=15)
        self.sentinel_processes = []
        for server in self.servers:
            server.stop()


@dataclass
class ServiceProcess:
    """A service started from its console script, with its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        def seen() -> bool:
            if self.process.poll() is not None and text not in self.log():
                raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            return text in self.log()

        wait_until(seen, timeout, f"{self.name} never logged {text!r}:\n{self.log()[-3000:]}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM (warm shutdown) and wait; returns the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool children."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class ServiceLauncher:
    """Starts console scripts against one Redis and stops whatever is left at teardown."""

    def __init__(self, redis_server: RedisServer, directory: Path, started: list[ServiceProcess] | None = None) -> None:
        self.redis_server = redis_server
        self.directory = directory
        self.started: list[ServiceProcess] = [] if started is None else started

    def on(self, redis_server: RedisServer) -> ServiceLauncher:
        """A launcher for another Redis whose services this one still stops at teardown."""
        return ServiceLauncher(redis_server, self.directory, self.started)

    def environment(self, **overrides: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CELERY_BROKER_URL=self.redis_server.url(0),
            CELERY_RESULT_BACKEND=self.redis_server.url(1),
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
            WORKER_CONCURRENCY="2",
            WORKER_HEARTBEAT_INTERVAL="1",
        )
        env.update(overrides)
        return env

    def start(self, script: str, *args: str, ready: bool = True, **env: str) -> ServiceProcess:
        index = len(self.started)
        log_path = self.directory / f"{script}-{index}.log"
        environment = self.environment(**env)
        environment.setdefault("WORKER_HEARTBEAT_FILE", str(self.directory / f"{script}-{index}.heartbeat"))
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [console_script(script), *args],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so kill() reaches pool children
            )
        service = ServiceProcess(script, process, log_path)
        self.started.append(service)
        if ready:
            self.wait_ready(service, environment)
        return service

    def wait_ready(self, service: ServiceProcess, environment: dict[str, str]) -> None:
        """Until the service's own `healthcheck` subcommand (what compose runs) exits 0."""
        probe = [console_script(service.name), "healthcheck"]

        def healthy() -> bool:
            if not service.alive():
                raise AssertionError(f"{service.name} exited:\n{service.log()[-3000:]}")
            return subprocess.run(probe, env=environment, capture_output=True, timeout=30).returncode == 0

        wait_until(healthy, 60, f"{service.name} never became healthy:\n{service.log()[-3000:]}", interval=0.2)

    def start_http(self, script: str, **env: str) -> tuple[ServiceProcess, str]:
        """An HTTP service on a free loopback port (HOST, PORT); returns it and its base URL."""
        port = env.pop("PORT", None) or str(free_port())
        service = self.start(script, PORT=port, HOST="127.0.0.1", **env)
        return service, f"http://127.0.0.1:{port}"

    def stop_all(self) -> None:
        for service in reversed(self.started):
            if service.alive():
                try:
                    service.terminate(timeout=20)
                except subprocess.TimeoutExpired:
                    service.kill()


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> HttpResponse:
    """One HTTP request with the standard library; `body` is JSON-encoded unless it is bytes."""
    headers = dict(headers or {})
    data: bytes | None
    if body is None or isinstance(body, bytes):
        data = body
    else:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return HttpResponse(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return HttpResponse(error.code, dict(error.headers), error.read())


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> redis.Redis:
    """A client of database 0 of the session's Redis, emptied (all databases) before the test."""
    if redis_server.process is None:
        redis_server.start()
    client = redis_server.client(0)
    client.flushall()
    return client


@pytest.fixture
def services(redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path) -> Iterator[ServiceLauncher]:
    launcher = ServiceLauncher(redis_server, tmp_path)
    yield launcher
    launcher.stop_all()


_FIGURES: list[str] = []


def report_figure(line: str) -> None:
    """A measured figure (latency, counts) shown in the summary at the end of the pytest run."""
    _FIGURES.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("measured figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
