"""End-to-end tests of the UNCHANGED docker-compose.yml on a real Docker engine.

Each run uses its own compose project name and a free host port (ORDER_SERVICE_PORT), talks to
the stack only on 127.0.0.1, and removes everything with `docker compose down -v` at the end.
Only the standard library and pytest are used.

Without an engine (`docker info` fails) the module is skipped; without the images the tests are
skipped; CELERY_STACK_REQUIRE_CONTAINER_TESTS=1 makes both a failure instead.

Run: bash tests/container/engine.sh && bash tests/container/build-standin-images.sh \
     && pytest -m container tests/container
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

# The cross-service tests' load generator (tests/ is on sys.path: tests/conftest.py).
from full_stack import OrderLoad

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
# Every ${VAR} that docker-compose.yml interpolates; read from it so the list cannot go stale.
COMPOSE_VARIABLES = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE_FILE.read_text()))

pytestmark = pytest.mark.container

UP_TIMEOUT = 180  # seconds for `up --wait`
TIMINGS: list[tuple[str, float]] = []  # the session's list (conftest), bound by the `stack` fixture
ORDER_TIMEOUT = 120  # seconds for a batch of orders to finish


def _engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH (run tests/container/engine.sh)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out (run tests/container/engine.sh)"
    if info.returncode != 0:
        return f"`docker info` failed, no Docker engine (run tests/container/engine.sh): {info.stderr.strip()[:200]}"
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    if compose.returncode != 0:
        return "no Compose v2 plugin (`docker compose version` failed; run tests/container/engine.sh)"
    return None


_t = time.monotonic()
_problem = _engine_problem()
_ENGINE_CHECK_SECONDS = time.monotonic() - _t
# Set CELERY_STACK_REQUIRE_CONTAINER_TESTS=1 (e.g. in a CI job that ran engine.sh and
# build-standin-images.sh) to turn every "cannot run here" skip into a failure.
REQUIRED = os.environ.get("CELERY_STACK_REQUIRE_CONTAINER_TESTS") == "1"


def _cannot_run(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (CELERY_STACK_REQUIRE_CONTAINER_TESTS=1)", pytrace=False)
    pytest.skip(reason)


if _problem:
    if REQUIRED:
        raise RuntimeError(f"{_problem} (CELERY_STACK_REQUIRE_CONTAINER_TESTS=1)")
    pytest.skip(_problem, allow_module_level=True)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_images() -> list[str]:
    with (REPO / "nix" / "images.toml").open("rb") as f:
        cfg = tomllib.load(f)
    return [f"{img['name']}:{cfg['tag']}" for img in cfg["images"].values()]


# The stack's one API key (ORDER_API_KEYS): compose refuses to start order-service without one.
API_KEY = "container-tests-0123456789abcdef"


class Stack:
    def __init__(self, project: str, port: int):
        self.project = project
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"

    # -- compose ------------------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        # Hermetic: the compose file's own defaults, whatever the calling shell exports.
        env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES and not k.startswith("COMPOSE_")}
        env["ORDER_SERVICE_PORT"] = str(self.port)
        env["ORDER_API_KEYS"] = API_KEY
        env.update(extra)
        return env

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        cmd = [
            "docker",
            "compose",
            "--project-name",
            self.project,
            "--project-directory",
            str(REPO),
            "--file",
            str(COMPOSE_FILE),
            # A developer's .env must not change what is tested.
            "--env-file",
            os.devnull,
            *args,
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or self.env())
        if check and r.returncode != 0:
            logs = subprocess.run(
                [*cmd[: cmd.index("--file") + 2], "logs", "--no-color", "--tail", "60"],
                capture_output=True,
                text=True,
                timeout=60,
                env=env or self.env(),
            ).stdout
            raise AssertionError(
                f"{' '.join(cmd[2:])} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}\n--- logs ---\n{logs[-8000:]}"
            )
        return r

    def up(self, *extra: str, env: dict[str, str] | None = None, label: str = "up -d --wait") -> float:
        t0 = time.monotonic()
        self.compose("up", "--detach", "--wait", *extra, timeout=UP_TIMEOUT + 30, env=env)
        dt = time.monotonic() - t0
        TIMINGS.append((f"compose {label}", dt))
        return dt

    def ps(self) -> list[dict]:
        out = self.compose("ps", "--all", "--format", "json").stdout.strip()
        if out.startswith("["):  # older Compose: one JSON array
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def container_ids(self, service: str) -> list[str]:
        r = self.compose("ps", "--quiet", service)
        return [line for line in r.stdout.split() if line]

    # -- HTTP ---------------------------------------------------------------------------------
    def request(
        self, method: str, path: str, body: object | None = None, timeout: float = 10, key: str | None = API_KEY
    ):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if key is not None:
            req.add_header("Authorization", f"Bearer {key}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw or b"null")
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def post_order(self, n: int) -> str:
        body = {
            "customer_email": f"customer{n}@example.com",
            "items": [
                {"sku": "ABC-1", "quantity": 2, "unit_price": "9.99"},
                {"sku": f"SKU-{n}", "quantity": 1, "unit_price": "1.50"},
            ],
        }
        status, resp = self.request("POST", "/orders", body)
        assert status == 202, (status, resp)
        assert resp["status"] == "accepted" and resp["order_id"], resp
        return resp["order_id"]

    def get_order(self, order_id: str) -> dict | None:
        """The order's public view, or None while the API cannot answer (e.g. Redis restarting)."""
        try:
            status, resp = self.request("GET", f"/orders/{order_id}")
        except (urllib.error.URLError, OSError):
            return None
        if status != 200:
            return None
        return resp

    def wait_orders(self, order_ids: list[str], predicate, timeout: float = ORDER_TIMEOUT) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        last: dict[str, dict | None] = {}
        pending = list(order_ids)
        while pending and time.monotonic() < deadline:
            still = []
            for oid in pending:
                rec = self.get_order(oid)
                last[oid] = rec
                if rec is None or not predicate(rec):
                    still.append(oid)
            pending = still
            if pending:
                time.sleep(0.5)
        assert not pending, (
            f"{len(pending)}/{len(order_ids)} orders not done within {timeout}s; e.g. "
            f"{[last.get(o) for o in pending[:3]]}\n--- logs ---\n{self.logs()[-6000:]}"
        )
        return {oid: last[oid] for oid in order_ids}  # type: ignore[misc]

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40", check=False).stdout


def done_and_notified(rec: dict) -> bool:
    return rec["status"] == "completed" and rec["notification"] == "sent"


def check_done(rec: dict) -> None:
    assert rec["status"] == "completed", rec
    assert rec["notification"] == "sent", rec
    assert rec["notifications_sent"] == 1, rec
    assert rec["total"] is not None and rec["worker"], rec


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


PROJECT_PREFIX = "cstest"


def _remove_stale_test_projects() -> None:
    """Projects of earlier runs of this module that never reached `down` (e.g. a killed run):
    their `restart: unless-stopped` containers come back whenever the engine restarts."""
    out = subprocess.run(
        ["docker", "ps", "--all", "--format", '{{.Label "com.docker.compose.project"}}'],
        capture_output=True,
        text=True,
    ).stdout.split()
    for project in sorted({p for p in out if re.fullmatch(PROJECT_PREFIX + r"[0-9a-f]{10}", p)}):
        subprocess.run(
            ["docker", "compose", "--project-name", project, "down", "--volumes", "--timeout", "5"],
            capture_output=True,
            timeout=120,
        )


def _require_images() -> None:
    missing = [
        ref
        for ref in expected_images()
        if subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode != 0
    ]
    if missing:
        _cannot_run(f"images missing: {missing}; load the Nix images or run tests/container/build-standin-images.sh")


@pytest.fixture(scope="module")
def stack(container_timings):
    global TIMINGS
    TIMINGS = container_timings
    TIMINGS.append(("docker info + compose version", _ENGINE_CHECK_SECONDS))
    _require_images()
    _remove_stale_test_projects()
    s = Stack(f"{PROJECT_PREFIX}{uuid.uuid4().hex[:10]}", free_port())
    try:
        s.up()
        yield s
    finally:
        t0 = time.monotonic()
        s.compose("down", "--volumes", "--remove-orphans", "--timeout", "60", check=False, timeout=180)
        TIMINGS.append(("compose down -v (teardown)", time.monotonic() - t0))


@pytest.fixture(autouse=True)
def _time_each_test(request):
    t0 = time.monotonic()
    yield
    TIMINGS.append((f"test {request.node.name}", time.monotonic() - t0))


# --------------------------------------------------------------------------------------------
# tests, in order: they share one stack
# --------------------------------------------------------------------------------------------


def test_compose_file_is_valid(stack: Stack):
    # `docker compose config` validates the unchanged file with the compose file's own defaults.
    result = stack.compose("config", "--quiet", check=False)
    assert result.returncode == 0, result.stderr


def test_stack_healthy_and_private(stack: Stack):
    ps = stack.ps()
    by_service = {c["Service"]: c for c in ps}
    assert set(by_service) == {"redis", "worker", "order-service", "notification-service"}, by_service
    for c in ps:
        assert c["Health"] == "healthy", c
    # Only order-service publishes a port, on loopback only.
    for c in ps:
        published = [p for p in (c.get("Publishers") or []) if p.get("PublishedPort")]
        if c["Service"] == "order-service":
            assert published and all(p["URL"] == "127.0.0.1" for p in published), published
        else:
            assert not published, (c["Service"], published)
    assert stack.request("GET", "/healthz", key=None)[0] == 200
    assert stack.request("GET", "/readyz", key=None)[0] == 200
    # Published beyond the container's loopback, the API needs its key.
    order = {"customer_email": "a@example.com", "items": [{"sku": "A-1", "quantity": 1, "unit_price": "1.00"}]}
    assert stack.request("POST", "/orders", order, key=None)[0] == 401
    assert stack.request("POST", "/orders", order, key="wrong-key-0123456789")[0] == 401
    # The containers run as the non-root user of images.toml.
    for cid in stack.container_ids("worker") + stack.container_ids("redis"):
        user = subprocess.run(
            ["docker", "inspect", "--format", "{{.Config.User}}", cid], capture_output=True, text=True
        ).stdout.strip()
        assert user.split(":")[0] in ("1000", "app"), user


def test_twenty_orders_complete_and_notify(stack: Stack):
    ids = [stack.post_order(i) for i in range(20)]
    records = stack.wait_orders(ids, done_and_notified)
    for rec in records.values():
        check_done(rec)
    # 2 x 9.99 + 1.50
    assert {rec["total"] for rec in records.values()} == {"21.48"}, records


def test_celery_commands_and_order_logs_in_the_images(stack: Stack):
    # The images have no shell and no `celery` program: each service's script runs Celery's commands.
    for service, script in (("worker", "worker"), ("notification-service", "notification-service")):
        r = stack.compose("exec", "-T", service, script, "celery", "inspect", "ping", "--timeout", "10", timeout=120)
        assert r.stdout.count("pong") >= 2, r.stdout
    order_id = stack.post_order(99)
    stack.wait_orders([order_id], done_and_notified)
    # One order's whole life by its id: order-service accepted it, the worker ran two tasks for it,
    # notification-service one.
    logs = stack.compose("logs", "--no-color", "--no-log-prefix", "order-service", "worker", "notification-service")
    lines = [line for line in logs.stdout.splitlines() if order_id in line]
    services = sorted(line.split()[2] for line in lines)
    assert services == ["notification-service", "order-service", "worker", "worker"], lines


def test_scaled_workers_share_work(stack: Stack):
    # Each task takes 1 s so that work has to spread over the replicas.
    env = stack.env(WORKER_SIMULATED_WORK_SECONDS="1")
    stack.up("--scale", "worker=3", env=env, label="up --wait --scale worker=3")
    assert len(stack.container_ids("worker")) == 3
    ids = [stack.post_order(100 + i) for i in range(12)]
    records = stack.wait_orders(ids, done_and_notified)
    for rec in records.values():
        check_done(rec)
    workers = {rec["worker"] for rec in records.values()}
    print(f"orders per worker: { {w: sum(r['worker'] == w for r in records.values()) for w in workers} }")
    assert len(workers) > 1, workers


def _hostname_of(cid: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.Config.Hostname}}", cid], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_warm_shutdown_finishes_running_task(stack: Stack):
    work = 5
    env = stack.env(WORKER_SIMULATED_WORK_SECONDS=str(work))
    stack.up("--scale", "worker=3", env=env, label=f"up --wait --scale worker=3 (work {work}s)")
    oid = stack.post_order(200)
    deadline = time.monotonic() + 30
    rec = None
    while time.monotonic() < deadline:
        rec = stack.get_order(oid)
        if rec and rec["status"] == "processing" and rec["worker"]:
            break
        time.sleep(0.1)
    assert rec and rec["status"] == "processing" and rec["worker"], rec
    host = rec["worker"].split("@", 1)[1]
    victims = [cid for cid in stack.container_ids("worker") if _hostname_of(cid) == host]
    assert len(victims) == 1, (rec["worker"], victims)
    victim = victims[0]

    t0 = time.monotonic()
    # Same as `docker compose stop` on this one replica: SIGTERM, SIGKILL after the grace period.
    subprocess.run(["docker", "stop", "--time", "60", victim], check=True, capture_output=True, timeout=120)
    stop_seconds = time.monotonic() - t0
    TIMINGS.append(("warm shutdown of busy worker (docker stop)", stop_seconds))
    state = json.loads(
        subprocess.run(
            ["docker", "inspect", "--format", "{{json .State}}", victim], capture_output=True, text=True, check=True
        ).stdout
    )
    # The task was finished by the stopping worker itself, before it exited, and nothing was killed.
    rec = stack.get_order(oid)
    assert rec is not None and rec["status"] == "completed", rec
    assert rec["worker"].split("@", 1)[1] == host, rec
    assert state["ExitCode"] == 0 and not state["OOMKilled"], state
    assert stop_seconds < 55, f"stop took {stop_seconds:.1f}s: close to the grace period (SIGKILL?)"
    # The notification is recorded by the remaining replicas.
    check_done(stack.wait_orders([oid], done_and_notified)[oid])
    # Back to three healthy replicas for the next test.
    stack.up("--scale", "worker=3", env=env, label="up --wait (restart stopped replica)")


def test_redis_restart_keeps_queued_orders(stack: Stack):
    env = stack.env(WORKER_SIMULATED_WORK_SECONDS="0")
    # No consumer: orders stay queued in Redis.
    stack.compose("stop", "worker", env=env, timeout=120)
    ids = [stack.post_order(300 + i) for i in range(10)]
    for oid in ids:
        rec = stack.get_order(oid)
        assert rec is not None and rec["status"] == "accepted", rec
    queued_before = int(stack.compose("exec", "-T", "redis", "redis-cli", "-n", "0", "LLEN", "orders").stdout)
    assert queued_before >= 10, queued_before

    t0 = time.monotonic()
    stack.compose("restart", "redis", env=env, timeout=120)
    deadline = time.monotonic() + 60
    while stack.compose("exec", "-T", "redis", "redis-cli", "ping", check=False).stdout.strip() != "PONG":
        assert time.monotonic() < deadline, "redis did not answer PING within 60 s of its restart"
        time.sleep(0.5)
    TIMINGS.append(("redis restart until PONG", time.monotonic() - t0))
    # The queue came back from the append-only file.
    queued_after = int(stack.compose("exec", "-T", "redis", "redis-cli", "-n", "0", "LLEN", "orders").stdout)
    assert queued_after == queued_before, (queued_before, queued_after)

    stack.up("--scale", "worker=3", env=env, label="up --wait (workers back after redis restart)")
    records = stack.wait_orders(ids, done_and_notified)
    for rec in records.values():
        check_done(rec)


def test_redis_restart_with_tasks_running(stack: Stack):
    # 1 s tasks on 3 replicas x 2 processes: several are running when Redis restarts. The
    # reconciler is an hour away, so only the workers' own requeue can finish them in time.
    env = stack.env(WORKER_SIMULATED_WORK_SECONDS="1", RECONCILE_AFTER_SECONDS="3600")
    stack.up("--scale", "worker=3", env=env, label="up --wait --scale worker=3 (work 1s)")
    ids = [stack.post_order(400 + i) for i in range(30)]
    deadline = time.monotonic() + 30
    while sum((stack.get_order(oid) or {}).get("status") == "processing" for oid in ids) < 2:
        assert time.monotonic() < deadline, "no task started"
        time.sleep(0.1)
    stack.compose("restart", "redis", env=env, timeout=120)
    back = time.monotonic()
    records = stack.wait_orders(ids, done_and_notified, timeout=90)
    TIMINGS.append(("redis restart with tasks running: all 30 orders done", time.monotonic() - back))
    for rec in records.values():
        check_done(rec)
    # `restart: unless-stopped` would hide a service that exited by itself: none may have restarted.
    for service in ("worker", "notification-service"):
        for cid in stack.container_ids(service):
            restarts = subprocess.run(
                ["docker", "inspect", "--format", "{{.RestartCount}}", cid], capture_output=True, text=True, check=True
            ).stdout.strip()
            assert restarts == "0", f"{service} container {cid[:12]} restarted {restarts} time(s)"


def test_down_removes_everything(stack: Stack):
    t0 = time.monotonic()
    stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "60", timeout=180)
    TIMINGS.append(("compose down -v", time.monotonic() - t0))
    label = f"label=com.docker.compose.project={stack.project}"
    leftovers = {}
    for kind in ("container", "volume", "network"):
        args = ["docker", kind, "ls", "--quiet", "--filter", label]
        if kind == "container":
            args.insert(3, "--all")
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
        if out:
            leftovers[kind] = out
    # Names too, in case a label was missing.
    vols = subprocess.run(["docker", "volume", "ls", "--quiet"], capture_output=True, text=True).stdout.split()
    leftovers_named = [v for v in vols if v.startswith(stack.project)]
    assert not leftovers and not leftovers_named, (leftovers, leftovers_named)


# --------------------------------------------------------------------------------------------
# Flower (profile `monitoring`), on a stack of its own
# --------------------------------------------------------------------------------------------

FLOWER_CREDENTIALS = "admin:container-test-password"
# One order's tasks and the queue of the service that runs each.
ORDER_TASKS = {
    "orders.process": "orders",
    "notifications.send_order_confirmation": "notifications",
    "orders.record_notification": "orders",
}


def flower_get(url: str, credentials: str | None = FLOWER_CREDENTIALS) -> tuple[int, object]:
    req = urllib.request.Request(url)
    if credentials:
        req.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def wait_for(predicate, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, message
        time.sleep(1)


def test_flower_profile_monitors_both_queues_behind_basic_auth(container_timings):
    global TIMINGS
    TIMINGS = container_timings
    s = Stack(f"{PROJECT_PREFIX}{uuid.uuid4().hex[:10]}", free_port())
    flower_port = free_port()
    flower = f"http://127.0.0.1:{flower_port}"
    env = s.env(FLOWER_BASIC_AUTH=FLOWER_CREDENTIALS, FLOWER_PORT=str(flower_port))
    monitoring = ("--profile", "monitoring")
    try:
        t0 = time.monotonic()
        s.compose(*monitoring, "up", "--detach", "--wait", timeout=UP_TIMEOUT + 30, env=env)
        TIMINGS.append(("compose --profile monitoring up -d --wait", time.monotonic() - t0))
        [container] = [c for c in s.ps() if c["Service"] == "flower"]
        assert container["Health"] == "healthy", container
        published = [p for p in container.get("Publishers") or [] if p.get("PublishedPort")]
        assert published and all(p["URL"] == "127.0.0.1" for p in published), published

        # Without the password (or with a wrong one) nothing but 401.
        assert flower_get(f"{flower}/api/workers", None)[0] == 401
        assert flower_get(f"{flower}/api/workers", "admin:wrong")[0] == 401

        def workers() -> dict[str, set[str]]:
            status, body = flower_get(f"{flower}/api/workers?refresh=1")
            assert status == 200, status
            found = {name: {q["name"] for q in info.get("active_queues") or []} for name, info in body.items()}
            return found if set().union(*found.values()) == {"orders", "notifications"} else {}

        queues = wait_for(workers, 60, "flower never listed the workers of both queues")

        order_id = s.post_order(0)
        s.wait_orders([order_id], done_and_notified)

        def order_tasks() -> dict[str, dict]:
            status, body = flower_get(f"{flower}/api/tasks")
            assert status == 200, status
            tasks = {
                task["name"]: task
                for task in body.values()
                if order_id in f"{task.get('args')}{task.get('kwargs')}" and task.get("state") == "SUCCESS"
            }
            return tasks if set(tasks) == set(ORDER_TASKS) else {}

        tasks = wait_for(order_tasks, 30, f"flower never showed the three tasks of {order_id} succeeded")
        for name, queue in ORDER_TASKS.items():
            assert queue in queues[tasks[name]["worker"]], (name, tasks[name]["worker"])
    finally:
        t0 = time.monotonic()
        s.compose(
            *monitoring, "down", "--volumes", "--remove-orphans", "--timeout", "60", check=False, timeout=180, env=env
        )
        TIMINGS.append(("compose --profile monitoring down -v", time.monotonic() - t0))


# --------------------------------------------------------------------------------------------
# profile `ha`: a project of its own
# --------------------------------------------------------------------------------------------

SENTINEL_MASTER = "stack-master"
HA_ENV = {
    "CELERY_BROKER_URL": ";".join(f"sentinel://sentinel-{i}:26379/0" for i in (1, 2, 3)),
    "CELERY_RESULT_BACKEND": ";".join(f"sentinel://sentinel-{i}:26379/1" for i in (1, 2, 3)),
    "REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
    "SENTINEL_DOWN_AFTER_MS": "2000",
    # Short, so that what the lost master took with it is redone within the test.
    "RECONCILE_AFTER_SECONDS": "5",
    "RECONCILE_INTERVAL_SECONDS": "1",
    "CELERY_VISIBILITY_TIMEOUT": "20",
}


def test_ha_profile_survives_losing_the_redis_master(container_timings):
    _require_images()
    _remove_stale_test_projects()
    s = Stack(f"{PROJECT_PREFIX}{uuid.uuid4().hex[:10]}", free_port())
    env = s.env(**HA_ENV)

    def sentinel(*command: str) -> list[str]:
        # A probe, bounded: the engine here has left a `docker compose exec` hanging for minutes
        # right after the master's SIGKILL; such a probe counts as no answer and is asked again.
        try:
            r = s.compose(
                "exec", "-T", "sentinel-1", "redis-cli", "-p", "26379", "sentinel", *command,
                env=env, check=False, timeout=20,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return []
        return r.stdout.split() if r.returncode == 0 else []

    def master_host() -> str | None:
        answer = sentinel("get-master-addr-by-name", SENTINEL_MASTER)
        return answer[0] if answer else None

    try:
        t0 = time.monotonic()
        s.compose("--profile", "ha", "up", "--detach", "--wait", env=env, timeout=UP_TIMEOUT + 30)
        container_timings.append(("compose --profile ha up -d --wait", time.monotonic() - t0))
        # The Sentinels know each other, and have made `redis-replica` a replica (no server starts
        # with a fixed role), before the master is lost.
        deadline = time.monotonic() + 60
        while True:
            state = sentinel("master", SENTINEL_MASTER)
            fields = dict(zip(state[::2], state[1::2], strict=False))
            if fields.get("num-other-sentinels") == "2" and _online_replicas(s, env, "redis") == ["redis-replica"]:
                break
            assert time.monotonic() < deadline, f"the Sentinels never saw the whole group: {fields}"
            time.sleep(0.5)
        assert master_host() == "redis"
        [master] = s.compose("ps", "--quiet", "redis", env=env).stdout.split()

        with OrderLoad(s.base_url, rate=10, headers={"Authorization": f"Bearer {API_KEY}"}) as load:
            deadline = time.monotonic() + 60
            while len(load.accepted) < 30:
                assert time.monotonic() < deadline, f"orders were not accepted: {load.timeline[-5:]}"
                time.sleep(0.2)
            killed_at = time.monotonic()
            subprocess.run(["docker", "kill", master], check=True, capture_output=True, timeout=60)
            while master_host() != "redis-replica":
                assert time.monotonic() - killed_at < 90, "the Sentinels never promoted the replica"
                time.sleep(0.2)
            promoted = time.monotonic() - killed_at
            # The lost server comes back and the Sentinels make it a replica of the new master;
            # acceptance, which waits for one replica, resumes.
            s.compose("start", "redis", env=env, timeout=120)
            while not any(t > killed_at + promoted and status == 202 for t, status in list(load.timeline)):
                assert time.monotonic() - killed_at < 120, "no order was accepted after the failover"
                time.sleep(0.2)
            after = [(t, status) for t, status in load.timeline if t >= killed_at]
            refused_at = next((t for t, status in after if status != 202), killed_at)
            resumed = next(t for t, status in after if status == 202 and t > refused_at) - killed_at
            time.sleep(5)
        container_timings.append(("ha: replica promoted after the master's SIGKILL", promoted))
        container_timings.append(("ha: orders accepted again (old master back as replica)", resumed))
        statuses = {status for _, status in load.timeline}
        assert statuses <= {202, 503}, statuses

        records = s.wait_orders(load.accepted, done_and_notified, timeout=180)
        for rec in records.values():
            check_done(rec)
        # The delivery ledger (on the new master) counted one delivery per accepted order.
        count_bad = (
            "local n = 0 for _, id in ipairs(ARGV) do "
            "if redis.call('HGET', 'notification:' .. id, 'delivered') ~= '1' then n = n + 1 end end return n"
        )
        bad = s.compose(
            "exec", "-T", "redis-replica", "redis-cli", "EVAL", count_bad, "0", *load.accepted, env=env
        ).stdout.strip()
        assert bad == "0", f"{bad} accepted orders without exactly one recorded delivery"
        during = [status for t, status in load.timeline if killed_at <= t < killed_at + resumed]
        print(
            f"ha failover: promoted after {promoted:.1f}s, accepting again after {resumed:.1f}s; "
            f"{len(load.accepted)} accepted, 0 lost; {during.count(503)} answered 503 meanwhile"
        )
        for service in ("worker", "notification-service", "order-service"):
            for cid in s.compose("ps", "--quiet", service, env=env).stdout.split():
                restarts = subprocess.run(
                    ["docker", "inspect", "--format", "{{.RestartCount}}", cid], capture_output=True, text=True
                ).stdout.strip()
                assert restarts == "0", f"{service} restarted {restarts} time(s)"
    finally:
        s.compose("--profile", "ha", "down", "--volumes", "--remove-orphans", "--timeout", "30", env=env, check=False)


def _redis_cli(s: Stack, env: dict[str, str], host: str, *command: str, port: int = 6379) -> str:
    """redis-cli in `sentinel-1` (the servers publish no port): its output, "" when it failed."""
    r = s.compose(
        "exec", "-T", "sentinel-1", "redis-cli", "-h", host, "-p", str(port), *command, env=env, check=False, timeout=30
    )
    return r.stdout.strip() if r.returncode == 0 else ""


def _online_replicas(s: Stack, env: dict[str, str], host: str) -> list[str]:
    """The replicas of `host` that finished their sync, as `host` reports them."""
    info = _redis_cli(s, env, host, "info", "replication")
    return re.findall(r"^slave\d+:ip=([^,]+),port=\d+,state=online", info, flags=re.MULTILINE)


def test_ha_profile_crash_of_the_promoted_master(container_timings):
    """Issue 19. After a first failover, the promoted master's redis-server is SIGKILLed inside its
    container (compose restarts it). Before, it came back with its fixed `--replicaof redis` while
    `redis` was its replica: two replicas of each other, no writable master for 26 s. Now no server
    has a fixed role: a writable master within 10 s of the crash, the other server its replica. Then
    the master is lost for good (`docker kill`, no restart): the Sentinels promote the other server
    (a second failover of the group) within 10 s, and the lost one, started again, comes back as a
    replica. The profile's own Sentinel settings (down-after-milliseconds 5000); servers only."""
    _require_images()
    _remove_stale_test_projects()
    s = Stack(f"{PROJECT_PREFIX}{uuid.uuid4().hex[:10]}", free_port())
    env = s.env(REDIS_SENTINEL_MASTER=SENTINEL_MASTER)
    servers = ("redis", "redis-replica")
    figures: list[tuple[str, float]] = []

    def container(service: str) -> str:
        [cid] = s.compose("ps", "--quiet", service, env=env).stdout.split()
        return cid

    def named_master() -> str | None:
        answer = _redis_cli(s, env, "127.0.0.1", "sentinel", "get-master-addr-by-name", SENTINEL_MASTER, port=26379)
        return answer.split()[0] if answer else None

    def writable_master() -> str | None:
        master = named_master()
        return master if master and _redis_cli(s, env, master, "set", "probe", "1") == "OK" else None

    def wait(predicate, timeout: float, message: str):
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            assert time.monotonic() < deadline, f"{message} (within {timeout:.0f}s)\n{s.logs()[-6000:]}"
            time.sleep(0.1)
        return value

    def sentinels_know_each_other() -> bool:
        state = _redis_cli(s, env, "127.0.0.1", "sentinel", "master", SENTINEL_MASTER, port=26379).split()
        return dict(zip(state[::2], state[1::2], strict=False)).get("num-other-sentinels") == "2"

    def other(server: str) -> str:
        return next(name for name in servers if name != server)

    try:
        t0 = time.monotonic()
        s.compose("--profile", "ha", "up", "--detach", "--wait", *servers, "sentinel-1", "sentinel-2", "sentinel-3",
                  env=env, timeout=UP_TIMEOUT + 30)  # fmt: skip
        figures.append(("ha servers: compose up -d --wait", time.monotonic() - t0))
        wait(
            lambda: _online_replicas(s, env, "redis") == ["redis-replica"],
            60,
            "the Sentinels never made redis-replica a replica",
        )
        figures.append(("ha servers: redis-replica a replica after compose up", time.monotonic() - t0))
        wait(sentinels_know_each_other, 60, "the Sentinels never saw each other")

        # The first failover: `redis` lost (not restarted), then started again.
        lost = time.monotonic()
        subprocess.run(["docker", "kill", container("redis")], check=True, capture_output=True, timeout=60)
        wait(lambda: writable_master() == "redis-replica", 60, "the Sentinels never promoted redis-replica")
        figures.append(("ha servers: first failover, writable master after the kill", time.monotonic() - lost))
        s.compose("start", "redis", env=env, timeout=120)
        wait(lambda: _online_replicas(s, env, "redis-replica") == ["redis"], 60, "redis never came back as a replica")
        figures.append(("ha servers: first failover, redis back as a replica after the kill", time.monotonic() - lost))

        # The crash of issue 19: the promoted master's redis-server SIGKILLed; compose restarts it.
        assert _redis_cli(s, env, "redis-replica", "set", "acknowledged", "1") == "OK"
        assert _redis_cli(s, env, "redis-replica", "wait", "1", "2000") == "1"
        victim = container("redis-replica")
        pid = int(subprocess.run(["docker", "inspect", "--format", "{{.State.Pid}}", victim], check=True,
                                 capture_output=True, text=True).stdout)  # fmt: skip
        crashed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        master = wait(writable_master, 10, "no writable master after the promoted master's crash")
        writable = time.monotonic() - crashed
        wait(lambda: _online_replicas(s, env, master) == [other(master)], 60, "no replica after the crash")
        replicated = time.monotonic() - crashed
        restarts = subprocess.run(["docker", "inspect", "--format", "{{.RestartCount}}", victim], capture_output=True,
                                  text=True).stdout.strip()  # fmt: skip
        assert restarts == "1", f"compose did not restart redis-replica ({restarts})"
        assert _redis_cli(s, env, master, "get", "acknowledged") == "1"
        outcome = "promoted the other server" if master != "redis-replica" else "the restarted server is master again"
        figures.append((f"ha servers: crash, writable master ({outcome})", writable))
        figures.append(("ha servers: crash, the other server its replica", replicated))

        # The second failover: the master lost for good, then started again.
        lost = time.monotonic()
        subprocess.run(["docker", "kill", container(master)], check=True, capture_output=True, timeout=60)
        wait(lambda: writable_master() == other(master), 10, "no new master within 10 s of losing the master")
        figures.append(("ha servers: second failover, writable master after the kill", time.monotonic() - lost))
        s.compose("start", master, env=env, timeout=120)
        wait(lambda: _online_replicas(s, env, other(master)) == [master], 60, f"{master} never came back as a replica")
        figures.append((f"ha servers: second failover, {master} back as a replica", time.monotonic() - lost))
        assert _redis_cli(s, env, other(master), "get", "acknowledged") == "1"
    finally:
        container_timings.extend(figures)
        print("; ".join(f"{what}: {seconds:.1f}s" for what, seconds in figures))
        s.compose("--profile", "ha", "down", "--volumes", "--remove-orphans", "--timeout", "30", env=env, check=False)
