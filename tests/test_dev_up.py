"""`./dev up` driven as a user would: in a fresh copy of the repository, its own process group, real
signals. The copy runs the environment of this test run (as inside `nix develop`: the console
scripts and honcho on PATH), so no package index is needed."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from full_stack import sample_order
from stack_testkit import free_port, http_request, report_figure, wait_until

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(
    not (ROOT / ".git").exists()
    or shutil.which("git") is None
    or (not (Path(sys.executable).parent / "honcho").exists() and shutil.which("honcho") is None),
    reason="needs the git checkout (a fresh copy of it) and honcho",
)


@dataclass
class DevUp:
    """One `./dev up` in its own process group (as a terminal runs it), output in a file."""

    process: subprocess.Popen[bytes]
    log_path: Path
    api: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        wait_until(lambda: text in self.log() or self.process.poll() is not None, timeout, f"no {text!r}")
        assert text in self.log(), self.log()[-3000:]

    def signal(self, signum: int) -> int:
        os.killpg(self.process.pid, signum)  # what the terminal does: the whole foreground group
        return self.process.wait(timeout=60)


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """The tracked files of the repository, as a fresh clone has them."""
    target = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(target)], check=True)
    # The working tree's own files (this test may run on uncommitted changes).
    for name in ("dev", "Procfile"):
        shutil.copy2(ROOT / name, target / name)
    return target


@pytest.fixture
def dev_up(clone: Path, tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    started: list[DevUp] = []

    def start(*args: str, **env: str) -> DevUp:
        environment = dict(os.environ)
        environment.update(
            IN_NIX_SHELL="impure",  # use what PATH has, as inside nix develop
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            REDIS_PORT=str(free_port()),
            PORT=str(free_port()),
            WORKER_HEARTBEAT_INTERVAL="1",
        )
        environment.update(env)
        log_path = tmp_path / f"dev-up-{len(started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                ["./dev", "up", *args],
                cwd=clone,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        run = DevUp(process, log_path, f"http://127.0.0.1:{environment['PORT']}")
        started.append(run)
        return run

    yield start
    for run in started:
        if run.process.poll() is None:
            os.killpg(run.process.pid, signal.SIGKILL)
    for pidfile in (clone / ".dev-state").glob("*.pid"):
        try:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def leftover_processes(clone: Path) -> list[str]:
    """dev-stack processes still alive: the services (pid files) and any redis-server of the copy."""
    alive = []
    for pidfile in (clone / ".dev-state").glob("*.pid"):
        try:
            os.kill(int(pidfile.read_text()), 0)
            alive.append(pidfile.stem)
        except ProcessLookupError:
            pass
    ps = subprocess.run(["pgrep", "-f", f"redis-server.*{clone}"], capture_output=True, text=True).stdout.split()
    return alive + [f"redis-server {pid}" for pid in ps]


def test_ready_line_once_the_stack_answers_and_sighup_stops_everything(dev_up, clone: Path) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    run = dev_up()
    run.wait_for("dev: stack ready")
    assert http_request("GET", f"{run.api}/healthz").status == 200, "ready printed before the API answers"
    took = time.monotonic() - started
    assert "visibility timeout 30s, reconciler after 60s" in run.log()
    assert run.signal(signal.SIGHUP) == 0  # the terminal was closed
    wait_until(lambda: not leftover_processes(clone), 10, f"left behind: {leftover_processes(clone)}")
    assert "Calling fsync() on the AOF file" in run.log(), "Redis did not stop cleanly, last"
    report_figure(f"./dev up: ready line {took:.1f}s after start; SIGHUP left no process")


def test_a_service_that_dies_stops_the_stack_and_is_named(dev_up, clone: Path) -> None:  # type: ignore[no-untyped-def]
    run = dev_up(NOTIFICATION_CHANNEL="no_such_module:factory")
    assert run.process.wait(timeout=90) != 0
    log = run.log()
    assert "notification-service.1 stopped (rc=2)" in log, log[-3000:]
    assert "dev: a service exited" in log
    assert log.count("NOTIFICATION_CHANNEL: cannot load") == 1
    wait_until(lambda: not leftover_processes(clone), 10, f"left behind: {leftover_processes(clone)}")


def test_a_taken_redis_port_is_refused_before_anything_starts(dev_up, clone: Path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = dev_up(REDIS_PORT=str(port))
        assert run.process.wait(timeout=30) == 1
    assert f"dev: port {port} is taken" in run.log() and "REDIS_PORT" in run.log()
    assert "started (pid=" not in run.log()


def test_a_configuration_error_is_shown_once(dev_up) -> None:  # type: ignore[no-untyped-def]
    run = dev_up(CELERY_VISIBILITY_TIMEOUT="soon")
    assert run.process.wait(timeout=30) == 2
    lines = [line for line in run.log().splitlines() if "configuration error" in line]
    assert len(lines) == 1 and "CELERY_VISIBILITY_TIMEOUT" in lines[0] and "Value error" not in lines[0], lines


def test_ctrl_c_during_a_task_then_the_next_start_finishes_it(dev_up, clone: Path) -> None:  # type: ignore[no-untyped-def]
    run = dev_up(WORKER_SIMULATED_WORK_SECONDS="8")
    run.wait_for("dev: stack ready")
    order_id = http_request("POST", f"{run.api}/orders", sample_order()).json()["order_id"]

    def status() -> str:
        return str(http_request("GET", f"{run.api}/orders/{order_id}").json()["status"])

    wait_until(lambda: status() == "processing", 30, "the order never started")
    assert run.signal(signal.SIGINT) == 0  # Ctrl-C
    assert "dev: stopped" in run.log()
    assert "Traceback" not in run.log(), run.log()[-3000:]
    assert "Calling fsync() on the AOF file" in run.log()
    wait_until(lambda: not leftover_processes(clone), 10, f"left behind: {leftover_processes(clone)}")

    again = dev_up(WORKER_SIMULATED_WORK_SECONDS="0", REDIS_PORT=run_env(run, "REDIS_PORT"), PORT=run_env(run, "PORT"))
    again.wait_for("dev: stack ready")
    started = time.monotonic()
    wait_until(
        lambda: http_request("GET", f"{again.api}/orders/{order_id}").json()["notification"] == "sent",
        60,
        "never finished",
    )
    report_figure(
        f"./dev up: a task interrupted by Ctrl-C finished {time.monotonic() - started:.1f}s after the next start"
    )
    again.signal(signal.SIGINT)


def test_monitoring_runs_flower_with_a_password_shown_once(dev_up, clone: Path) -> None:  # type: ignore[no-untyped-def]
    flower_port = free_port()
    run = dev_up("--monitoring", FLOWER_PORT=str(flower_port), FLOWER_BASIC_AUTH="")
    run.wait_for("dev: stack ready", timeout=120)
    [line] = [line for line in run.log().splitlines() if line.startswith("dev: Flower on ")]
    assert line.startswith(f"dev: Flower on http://127.0.0.1:{flower_port}, user flower, password "), line
    password = line.split("password ", 1)[1].split()[0]
    assert run.log().count(password) == 1, "the password is shown once"
    auth = {"Authorization": "Basic " + base64.b64encode(f"flower:{password}".encode()).decode()}

    def workers() -> int:
        response = http_request("GET", f"http://127.0.0.1:{flower_port}/api/workers?refresh=1", headers=auth)
        assert response.status == 200, response.body
        return len(response.json())

    assert wait_until(workers, 60, "flower never listed the workers", 0.5) == 2
    assert http_request("GET", f"http://127.0.0.1:{flower_port}/api/workers").status == 401
    assert run.signal(signal.SIGINT) == 0
    assert "dev: stopped" in run.log(), run.log()[-3000:]
    wait_until(lambda: not leftover_processes(clone), 10, f"left behind: {leftover_processes(clone)}")


def run_env(run: DevUp, name: str) -> str:
    """A variable the run was started with (its ports, for a restart on the same state)."""
    if name == "PORT":
        return run.api.rsplit(":", 1)[1]
    return next(
        line.split(":")[2].split()[0] for line in run.log().splitlines() if line.startswith("dev: Redis 127.0.0.1:")
    )


SYSTEM_PYTHON = Path("/usr/bin/python3")


def externally_managed(python: Path) -> bool:
    """PEP 668: the distribution marks its interpreter as managed by the system package manager."""
    if not python.exists():
        return False
    code = "import sysconfig, pathlib; print(pathlib.Path(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED').exists())"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip() == "True"


@pytest.mark.skipif(
    os.environ.get("CELERY_STACK_NETWORK_TESTS") != "1" or not externally_managed(SYSTEM_PYTHON),
    reason="needs the package index (CELERY_STACK_NETWORK_TESTS=1) and a PEP 668 system Python at /usr/bin/python3",
)
def test_setup_works_with_the_distributions_own_python(clone: Path) -> None:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    # No uv on PATH, as on a stock machine: ./dev must not pip-install into the system Python.
    env.update(PYTHON=str(SYSTEM_PYTHON), PATH="/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin")
    started = time.monotonic()
    result = subprocess.run(["./dev", "setup"], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "externally-managed-environment" not in result.stderr
    assert (clone / ".venv" / "tools" / "bin" / "uv").exists()
    [venv] = (clone / ".venv").glob("py3.*")
    imports = "import celery, worker, order_service, notification_service, stack_testkit"
    check = subprocess.run([str(venv / "bin" / "python"), "-c", imports], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    report_figure(f"./dev setup with {SYSTEM_PYTHON} (PEP 668): {time.monotonic() - started:.0f}s on a fresh clone")
