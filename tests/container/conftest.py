"""Container tests: run the real docker-compose.yml against a Docker engine.

Needs an engine and the images (tests/container/engine.sh, then
tests/container/build-standin-images.sh); run with `pytest -m container tests/container`.
"""

from __future__ import annotations

import pytest

TIMINGS_KEY = pytest.StashKey[list]()


def pytest_configure(config):
    config.stash[TIMINGS_KEY] = []
    config.addinivalue_line(
        "markers",
        "container: needs a Docker engine with Compose v2 and the celery-stack images "
        "(tests/container/engine.sh, tests/container/build-standin-images.sh)",
    )


@pytest.fixture(scope="session")
def container_timings(request) -> list[tuple[str, float]]:
    """(what, seconds) pairs, printed in a `container timings` section at the end of the run."""
    return request.config.stash[TIMINGS_KEY]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    timings = config.stash.get(TIMINGS_KEY, [])
    if not timings:
        return
    terminalreporter.section("container timings")
    for what, seconds in timings:
        terminalreporter.write_line(f"{what:<60} {seconds:7.1f}s")
