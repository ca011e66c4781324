"""Facts that Nix, compose and Python must agree on, each defined once and cross-checked here.

nix/images.toml is the source of truth for images; the packages' pyproject.toml files for versions,
dependencies and console scripts; the settings classes for environment variable names.
"""

from __future__ import annotations

import ast
import importlib
import re
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

import common_tasks

ROOT = Path(__file__).resolve().parent.parent
IMAGES = tomllib.loads((ROOT / "nix" / "images.toml").read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
# Variables read by the runtime rather than our settings classes.
RUNTIME_VARIABLES = {"PYTHONUNBUFFERED", "PATH"}


def pyproject(folder: str) -> dict[str, Any]:
    return tomllib.loads((ROOT / folder / "pyproject.toml").read_text())


# The repository's distributions, as nix/python-packages.nix and ./dev find them: every top-level
# folder whose pyproject.toml has a [project] table (distribution name -> folder).
DISTRIBUTIONS = {
    pyproject(path.parent.name)["project"]["name"]: path.parent.name
    for path in sorted(ROOT.glob("*/pyproject.toml"))
    if "project" in pyproject(path.parent.name)
}


def settings_class(package: str) -> type[BaseSettings]:
    """The one settings class a service defines in its `settings` module."""
    module = importlib.import_module(f"{package.replace('-', '_')}.settings")
    [found] = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, BaseSettings) and value.__module__ == module.__name__
    ]
    return found


# images.toml key -> settings class, for every image that runs one of this repository's services.
PYTHON_SERVICES = {
    key: settings_class(image["package"])
    for key, image in IMAGES["images"].items()
    if image["package"] in DISTRIBUTIONS
}


def test_every_distribution_pins_the_common_version() -> None:
    version = pyproject("common")["project"]["version"]
    assert common_tasks.__version__ == version
    for name, folder in DISTRIBUTIONS.items():
        dependencies = pyproject(folder)["project"].get("dependencies", [])
        pins = [d for d in dependencies if d.startswith("common-tasks")]
        assert pins in ([], [f"common-tasks=={version}"]), name
    for key in PYTHON_SERVICES:
        assert f"common-tasks=={version}" in pyproject(DISTRIBUTIONS[key])["project"]["dependencies"], key


@pytest.mark.parametrize("key", sorted(PYTHON_SERVICES))
def test_image_entrypoint_is_the_packages_console_script(key: str) -> None:
    image = IMAGES["images"][key]
    project = pyproject(DISTRIBUTIONS[image["package"]])["project"]
    assert image["entrypoint"] in project["scripts"]
    assert IMAGES["tag"] == project["version"], "the image tag follows the package version"


@pytest.mark.parametrize("key", sorted(IMAGES["images"]))
def test_compose_runs_the_image_that_nix_builds(key: str) -> None:
    image = IMAGES["images"][key]
    service = COMPOSE["services"][key]
    assert service["image"] == f"{image['name']}:{IMAGES['tag']}"
    assert "build" not in service and service["pull_policy"] == "never"
    assert "container_name" not in service
    health = service["healthcheck"]["test"]
    assert health[0] == "CMD", "exec form: the images have no shell"
    if key in PYTHON_SERVICES:
        assert health[1:] == [image["entrypoint"], "healthcheck"]
    assert service.get("stop_grace_period"), "compose's 10 s default cuts warm shutdown short"


def test_compose_has_exactly_the_images_services() -> None:
    """One compose service per image of images.toml, by the same name: the default stack, and Flower
    under profile `monitoring`; the other profiled services (`ha`) run the redis image."""
    services = COMPOSE["services"]
    default = {key for key, service in services.items() if "profiles" not in service}
    assert default | {"flower"} == set(IMAGES["images"])
    profiles = {key: service["profiles"] for key, service in services.items() if "profiles" in service}
    assert profiles.pop("flower") == ["monitoring"]
    assert set(map(tuple, profiles.values())) == {("ha",)}


def test_the_ha_profile_runs_the_redis_image_only() -> None:
    """Profile `ha`: a replica and three Sentinels, all from the redis image, none with a port."""
    ha = {key: service for key, service in COMPOSE["services"].items() if "ha" in service.get("profiles", [])}
    assert set(ha) == {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    redis_image = f"{IMAGES['images']['redis']['name']}:{IMAGES['tag']}"
    for key, service in ha.items():
        assert service["profiles"] == ["ha"] and service["image"] == redis_image, key
        assert service["healthcheck"]["test"][0] == "CMD", key
    replica_volume = ha["redis-replica"]["volumes"][0].split(":")[0]
    assert replica_volume in COMPOSE["volumes"]
    # Every Sentinel watches the one master name the services are given.
    for key in ("sentinel-1", "sentinel-2", "sentinel-3"):
        command = ha[key]["command"]
        monitor = command.index("monitor")
        assert command[monitor + 1 : monitor + 3] == ["${REDIS_SENTINEL_MASTER:-stack-master}", "redis"], key


def test_the_sentinels_alone_give_the_redis_servers_their_roles() -> None:
    """Issue 19: a server started with `--replicaof` takes that role back on every restart, whatever
    the Sentinels decided since (after a failover: two servers replicas of each other, no master).
    No server has one; every Sentinel knows every server other than the initial master as a
    replica, and makes it one."""
    services = COMPOSE["services"]
    servers = [key for key, service in services.items() if service["image"] == services["redis"]["image"]]
    servers = [key for key in servers if "--sentinel" not in services[key]["command"]]
    assert servers == ["redis", "redis-replica"]
    for key in servers:
        command = [str(arg).lower() for arg in services[key]["command"]]
        assert "--replicaof" not in command and "--slaveof" not in command, key
        assert command[command.index("--replica-announce-ip") + 1] == key, "announced by its service name"
    for key in ("sentinel-1", "sentinel-2", "sentinel-3"):
        command = services[key]["command"]
        known = [command[i + 2] for i, arg in enumerate(command) if arg == "known-replica"]
        assert known == ["redis-replica"], key
        assert command[command.index("known-replica") + 1] == "${REDIS_SENTINEL_MASTER:-stack-master}", key
        assert "redis-replica" in services[key]["depends_on"], "the name must resolve when the Sentinel starts"


# Services that publish a port, on loopback only: the API, and Flower (profile `monitoring`).
PUBLISHED = {"order-service", "flower"}


def test_only_the_api_and_flower_publish_their_port_on_loopback() -> None:
    for key, service in COMPOSE["services"].items():
        if key not in PUBLISHED:
            assert "ports" not in service, key
    for key in PUBLISHED:
        [mapping] = COMPOSE["services"][key]["ports"]
        host, container = mapping.rsplit(":", 1)
        assert host.startswith("127.0.0.1:")
        assert [int(container)] == IMAGES["images"][key]["ports"]
    assert IMAGES["images"]["order-service"]["ports"] == [int(IMAGES["images"]["order-service"]["env"]["PORT"])]
    assert f"--port={IMAGES['images']['flower']['ports'][0]}" in IMAGES["images"]["flower"]["cmd"]


def test_flower_is_optional_authenticated_and_not_persistent() -> None:
    flower = COMPOSE["services"]["flower"]
    assert flower["profiles"] == ["monitoring"]
    assert "--persistent=False" in IMAGES["images"]["flower"]["cmd"]
    # Celery reads the broker and backend URLs, Flower its own FLOWER_* variables; no password here.
    assert set(flower["environment"]) == {"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "FLOWER_BASIC_AUTH"}
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "${FLOWER_BASIC_AUTH:-}"
    assert set(IMAGES["images"]["flower"]["env"]) <= set(flower["environment"])
    # The image's environment has the Redis transport's client (flower's celery comes without it).
    assert {"flower", "redis"} <= set(IMAGES["images"]["flower"]["requirements"])


@pytest.mark.parametrize("key", sorted(PYTHON_SERVICES))
def test_every_variable_set_for_a_service_is_one_it_reads(key: str) -> None:
    settings: type[BaseSettings] = PYTHON_SERVICES[key]
    known = set(settings.model_fields) | RUNTIME_VARIABLES
    assert set(IMAGES["images"][key]["env"]) <= known
    assert set(COMPOSE["services"][key]["environment"]) <= known


@pytest.mark.parametrize("key", sorted(PYTHON_SERVICES))
def test_compose_passes_every_setting_through(key: str) -> None:
    fixed_by_the_image = {"HOST", "PORT"}  # where the container listens is not a user's choice
    wanted = set(PYTHON_SERVICES[key].model_fields) - fixed_by_the_image
    assert wanted <= set(COMPOSE["services"][key]["environment"])


def megabytes(size: str) -> float:
    number, unit = re.fullmatch(r"(\d+)([kmg])b?", size.lower()).groups()  # type: ignore[union-attr]
    return int(number) * {"k": 1 / 1024, "m": 1, "g": 1024}[unit]


@pytest.mark.parametrize("service", ["redis", "redis-replica"])
def test_redis_memory_is_bounded_and_never_evicts(service: str) -> None:
    """Past maxmemory writes fail (the API answers 503) rather than Redis growing until it is
    killed, and no queue or order key is ever evicted."""
    command = COMPOSE["services"][service]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    # Below the Kubernetes container's memory limit (512Mi), with room for the AOF rewrite.
    assert megabytes(command[command.index("--maxmemory") + 1]) <= 0.8 * 512


def test_redis_persists_with_aof_on_a_named_volume() -> None:
    redis = COMPOSE["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] in ("everysec", "always")
    volume, target = redis["volumes"][0].split(":")[:2]
    assert volume in COMPOSE["volumes"] and target == IMAGES["images"]["redis"]["workdir"]


def test_nix_reads_the_image_facts_from_images_toml() -> None:
    images_nix = (ROOT / "nix" / "images.nix").read_text()
    assert "builtins.fromTOML (builtins.readFile ./images.toml)" in images_nix
    # Distributions and their dependencies come from the pyproject.toml files, not a copy.
    assert 'lib.importTOML (root + "/${dir}/pyproject.toml")' in (ROOT / "nix" / "python-packages.nix").read_text()
    flake = (ROOT / "flake.nix").read_text()
    assert "python313" in (ROOT / "nix" / "python-packages.nix").read_text()
    assert "python3." not in flake and "python3 " not in flake


def test_the_vm_tests_script_is_python() -> None:
    """nix/vm-test.nix's testScript, with each Nix interpolation replaced by a store path, parses:
    the NixOS test driver lints it before the VM starts, and only a machine with KVM runs it."""
    text = (ROOT / "nix" / "vm-test.nix").read_text()
    script = text[text.index("testScript = ''") + len("testScript = ''") : text.rindex("'';")]
    script = textwrap.dedent(re.sub(r"\$\{[^}]*\}", "/nix/store/0-path", script))
    tree = ast.parse(script)
    calls = {
        node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert {"wait_for_unit", "succeed", "wait_until_succeeds"} <= calls
    # It runs the compose file users run, unchanged.
    assert "${../docker-compose.yml}" in text
