"""Schemathesis, the schema-driven fuzzer, against the real service: the `order-service` console
script (gunicorn) on a real Redis, fed the document it serves at /openapi.json.

Its CLI runs every phase (examples, coverage, fuzzing, stateful) in both modes (valid and invalid
data), with a fixed seed, and every check but one: each answer must be a documented status with a
body and content type matching the document, never a 5xx, and invalid data must be refused; a
method a path does not have must get 405 with Allow. Left out: `positive_data_acceptance`, which
needs a schema that admits exactly what the API accepts. JSON Schema cannot say how many digits and
decimal places a JSON number has, so pydantic's schema for a unit price states its range only, and
a schema-valid price such as 0.99999 is rightly refused with the documented 422.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack_testkit import RedisServer, ServiceLauncher, console_script, report_figure

pytest.importorskip("schemathesis", reason="not packaged by nixpkgs 26.05 (nix/nixpkgs-versions.toml)")

EXAMPLES_PER_OPERATION = 10
SEED = 1
API_KEY = "schemathesis-key-0123456789"


@pytest.fixture(scope="module")
def keyed_api_server(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """With a key, so that the `ignored_auth` check sees the operations refuse a request without it."""
    launcher = ServiceLauncher(redis_server, tmp_path_factory.mktemp("order-service"))
    _, base_url = launcher.start_http("order-service", ORDER_API_KEYS=API_KEY, ORDER_RATE_LIMIT="1000000/second")
    yield base_url
    launcher.stop_all()


def test_the_running_service_answers_as_its_openapi_document_says(keyed_api_server: str, tmp_path: Path) -> None:
    command = [
        console_script("schemathesis"),
        "run",
        f"{keyed_api_server}/openapi.json",
        f"--header=Authorization: Bearer {API_KEY}",
        "--checks=all",
        "--exclude-checks=positive_data_acceptance",
        f"--max-examples={EXAMPLES_PER_OPERATION}",
        # The same cases every run: a fixed seed and no example database (--generation-deterministic
        # fixes the coverage and fuzzing phases but not the stateful one), one request at a time.
        f"--seed={SEED}",
        "--generation-database=none",
        "--workers=1",
        "--request-timeout=10",
        "--no-color",
    ]
    # tmp_path as the working directory: no schemathesis.toml is picked up, no report is left behind.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    generated = re.search(r"(\d+) generated", output)
    assert result.returncode == 0 and generated is not None, output[-6000:]
    report_figure(f"Schemathesis: {generated[1]} generated cases against order-service, no failure")
