"""The deployment files: `kuberay/` against KubeRay's CRDs and Kubernetes' own schemas, the embedded Serve
configs against Ray's schema and the platform's settings, `cluster.yaml` against the launcher's schema,
and the arithmetic that ties each Serve config to the nodes that must hold its replicas.

The kustomizations are rendered with `kubectl kustomize` (or `kustomize build`); the files themselves
are checked without it.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from common.serve_env import CLUSTER_INGRESS_ENV, SERVE_REQUEST_PATH_ENV
from modalities import SERVICES
from serve_app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "kuberay"
CRDS = ROOT.parent / "shared" / "kuberay-crds"
KUSTOMIZATIONS = ["base", "overlays/dev"]
# Core objects are checked against this release's published schemas (kubernetes-validate ships them).
KUBERNETES_VERSION = "1.32.0"
# KubeRay's RayService upgrade strategies (the CRD types the field as a plain string; its webhook checks).
UPGRADE_STRATEGIES = {"NewCluster", "NewClusterWithIncrementalUpgrade", "None"}
# Environment variables that hold credentials: they must come from a Secret (valueFrom), never a value.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|API_KEY|CREDENTIALS_JSON", re.IGNORECASE)
# CPUs and GPUs of the launcher's instance types in cluster.yaml (EC2's published figures).
INSTANCE_TYPES = {"m6i.xlarge": (4, 0), "m6i.2xlarge": (8, 0), "g5.xlarge": (4, 1), "g5.2xlarge": (8, 1)}


# ---------------------------------------------------------------- loading


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kuberay_generate", KUBERAY / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


generate = load_generator()


def patches() -> set[Path]:
    """The files that the kustomizations apply as patches: parts of objects, checked once applied."""
    found = set()
    for kustomization in KUBERAY.rglob("kustomization.yaml"):
        for patch in yaml.safe_load(kustomization.read_text()).get("patches", []):
            found.add((kustomization.parent / patch["path"]).resolve())
    return found


def source_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Kubernetes object written in `kuberay/` as it stands (patches and kustomizations aside)."""
    for path in sorted(set(KUBERAY.rglob("*.yaml")) - patches()):
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(document, dict) and "apiVersion" in document and document.get("kind") != "Kustomization":
                yield f"{path.relative_to(KUBERAY)}#{index}", document


@functools.cache
def _rendered(kustomization: str) -> tuple[dict[str, Any], ...]:
    directory = str(KUBERAY / kustomization)
    if kubectl := shutil.which("kubectl"):
        command = [kubectl, "kustomize", directory]
    elif kustomize := shutil.which("kustomize"):
        command = [kustomize, "build", directory]
    else:
        pytest.skip("neither kubectl (with its built-in kustomize) nor kustomize is installed")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr}"
    return tuple(document for document in yaml.safe_load_all(result.stdout) if document)


def rendered(kustomization: str) -> list[dict[str, Any]]:
    """The objects that `kubectl apply -k kuberay/<kustomization>` would create (deep copies)."""
    return copy.deepcopy(list(_rendered(kustomization)))


def the(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [document for document in documents if document["kind"] == kind]
    return found


def serve_config_of(rayservice: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    return config


def yaml_file(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return loaded


# ---------------------------------------------------------------- schemas


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` refusing fields it does not name, as the API server does with strict field validation.

    KubeRay's CRDs leave `additionalProperties` out (the API server prunes unknown fields silently), so
    without this a misspelt field would pass here and be dropped in the cluster.
    """
    result = dict(schema)
    if "properties" in result:
        result["properties"] = {name: closed(field) for name, field in result["properties"].items()}
        if "additionalProperties" not in result and not result.get("x-kubernetes-preserve-unknown-fields"):
            result["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(result.get(key), dict):
            result[key] = closed(result[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in result:
            result[key] = [closed(option) for option in result[key]]
    return result


@functools.cache
def crd_validator(kind: str, version: str) -> jsonschema.Draft7Validator:
    if not CRDS.is_dir():
        pytest.skip(f"KubeRay's CRDs are not at {CRDS} (shared/ beside the repository)")
    crd = yaml.safe_load((CRDS / f"ray.io_{kind.lower()}s.yaml").read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft7Validator(closed(served["schema"]["openAPIV3Schema"]))


def schema_errors(document: dict[str, Any]) -> list[str]:
    """Why `document` would be refused: KubeRay's CRD for ray.io objects, Kubernetes' schemas for the rest."""
    group, _, version = document["apiVersion"].rpartition("/")
    if group == "ray.io":
        validator = crd_validator(document["kind"], version)
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'/'.join(map(str, exc.path))}: {exc.message}"]
    return []


@pytest.mark.parametrize("document", [pytest.param(d, id=name) for name, d in source_documents()])
def test_each_manifest_file_matches_its_schema(document: dict[str, Any]) -> None:
    assert schema_errors(document) == []


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rendered_kustomization_matches_the_schemas(kustomization: str) -> None:
    documents = rendered(kustomization)
    assert {d["kind"] for d in documents} >= {"RayService", "Ingress"}
    errors = {f"{d['kind']}/{d['metadata']['name']}": schema_errors(d) for d in documents}
    assert {name: found for name, found in errors.items() if found} == {}


def test_a_misspelt_field_is_refused() -> None:
    """The strict CRD check catches what the API server would silently drop."""
    (rayservice,) = [d for _, d in source_documents() if d["kind"] == "RayService" and "rayClusterConfig" in d["spec"]]
    rayservice = copy.deepcopy(rayservice)
    rayservice["spec"]["rayClusterConfig"]["enableInTreeAutoScaling"] = True
    assert any("enableInTreeAutoScaling" in error for error in schema_errors(rayservice))


# ---------------------------------------------------------------- the embedded Serve configs


def test_generator_check_passes() -> None:
    """`kuberay/generate.py --check`: each manifest embeds its Serve config as the source now reads."""
    result = subprocess.run([sys.executable, str(KUBERAY / "generate.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_generator_check_fails_on_a_stale_copy(tmp_path: Path) -> None:
    target = generate.TARGETS[0]
    manifest = tmp_path / "rayservice.yaml"
    manifest.write_text(target.manifest.read_text().replace("num_replicas: 2", "num_replicas: 3", 1))
    stale = generate.Target(manifest, target.source)
    assert generate.stale(stale)
    manifest.write_text(generate.embed(manifest.read_text(), stale.serve_config()))
    assert not generate.stale(stale)
    assert manifest.read_text() == target.manifest.read_text()  # embedding is all the generator changes


@pytest.mark.parametrize(
    "kustomization, source, overrides",
    [("base", "serve_config.gpu.yaml", {}), ("overlays/dev", "serve_config.yaml", generate.KUBERNETES)],
)
def test_rendered_serve_config_is_its_source(kustomization: str, source: str, overrides: dict[str, Any]) -> None:
    embedded = serve_config_of(the(rendered(kustomization), "RayService"))
    assert embedded == generate.merge(yaml_file(source), overrides)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_embedded_serve_config_matches_rays_schema_and_settings(kustomization: str, tmp_path: Path) -> None:
    config = serve_config_of(the(rendered(kustomization), "RayService"))
    (app,) = ServeDeploySchema.model_validate(config).applications
    assert app.import_path == "serve_app.app:build_app"
    assert {d.name for d in app.deployments} == {"ingress", *SERVICES}
    env = {"LABUBU_DATA_DIR": str(tmp_path), "LABUBU_JWT_SECRET": "x" * 40}
    assert set(Settings.load(config["applications"][0]["args"], env=env).services) == set(SERVICES)
    # Kubernetes reaches the proxies through the worker pods' addresses (rayservice.yaml).
    assert config["proxy_location"] == "EveryNode" and config["http_options"]["host"] == "0.0.0.0"


# ---------------------------------------------------------------- the cluster the configs run on


@dataclass(frozen=True)
class Group:
    """A kind of Ray node: what one holds, and how many of them there are at least and at most."""

    name: str
    cpus: float
    gpus: float
    min_nodes: int
    max_nodes: int


@dataclass(frozen=True)
class Demand:
    """What a deployment asks for: per replica, and its replica counts."""

    name: str
    cpus: float
    gpus: float
    min_replicas: int
    max_replicas: int


def demands(serve_config: dict[str, Any]) -> list[Demand]:
    (app,) = serve_config["applications"]
    found = []
    for deployment in app["deployments"]:
        options = deployment.get("ray_actor_options", {})
        autoscaling = deployment.get("autoscaling_config") or {}
        fixed = deployment.get("num_replicas", 1)
        found.append(
            Demand(
                deployment["name"],
                float(options.get("num_cpus", 1)),
                float(options.get("num_gpus", 0)),
                autoscaling.get("min_replicas", fixed),
                autoscaling.get("max_replicas", fixed),
            )
        )
    return found


def quantity(value: str | int | float) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def worker_groups(rayservice: dict[str, Any]) -> list[Group]:
    groups = []
    for spec in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        limits = spec["template"]["spec"]["containers"][0]["resources"]["limits"]
        cpus = quantity(spec["rayStartParams"].get("num-cpus", limits["cpu"]))
        gpus = quantity(limits.get("nvidia.com/gpu", 0))
        groups.append(Group(spec["groupName"], cpus, gpus, spec["minReplicas"], spec["maxReplicas"]))
    return groups


def launcher_groups(config: dict[str, Any]) -> list[Group]:
    groups = []
    for name, node_type in config["available_node_types"].items():
        if name == config["head_node_type"]:
            continue
        cpus, gpus = INSTANCE_TYPES[node_type["node_config"]["InstanceType"]]
        groups.append(Group(name, cpus, gpus, node_type["min_workers"], node_type["max_workers"]))
    return groups


def capacity_problems(deployments: list[Demand], groups: list[Group]) -> list[str]:
    """Why the deployments would not fit the groups: a replica no node can hold, or too few nodes.

    GPU deployments go to GPU nodes; CPU-only ones to CPU-only nodes (Ray keeps CPU work off GPU
    nodes while it can). Sums, not bin-packing: the fractions in our configs pack exactly.
    """
    problems = []
    for d in deployments:
        if not any(g.cpus >= d.cpus and g.gpus >= d.gpus for g in groups):
            problems.append(f"no node can hold one {d.name} replica ({d.cpus:g} CPUs, {d.gpus:g} GPUs)")
    for kind, needs_gpu in (("GPU", True), ("CPU-only", False)):
        mine = [d for d in deployments if (d.gpus > 0) == needs_gpu]
        nodes = [g for g in groups if (g.gpus > 0) == needs_gpu]
        for bound in ("min", "max"):
            replicas = {d.name: getattr(d, f"{bound}_replicas") for d in mine}
            count = {g.name: getattr(g, f"{bound}_nodes") for g in nodes}
            for resource in ("cpus", "gpus"):
                wanted = sum(replicas[d.name] * getattr(d, resource) for d in mine)
                held = sum(count[g.name] * getattr(g, resource) for g in nodes)
                if wanted > held:
                    problems.append(
                        f"{kind} deployments at {bound}_replicas want {wanted:g} {resource}, {kind} nodes hold {held:g}"
                    )
    return problems


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_worker_groups_hold_the_replicas(kustomization: str) -> None:
    rayservice = the(rendered(kustomization), "RayService")
    assert capacity_problems(demands(serve_config_of(rayservice)), worker_groups(rayservice)) == []


def test_the_launcher_node_types_hold_the_replicas() -> None:
    assert (
        capacity_problems(demands(yaml_file("serve_config.gpu.yaml")), launcher_groups(yaml_file("cluster.yaml"))) == []
    )


def test_capacity_check_notices_a_shortfall() -> None:
    groups = [Group("gpu", 7, 1, 1, 2)]
    assert capacity_problems([Demand("llm", 2, 0.5, 1, 8)], groups) == [
        "GPU deployments at max_replicas want 16 cpus, GPU nodes hold 14",
        "GPU deployments at max_replicas want 4 gpus, GPU nodes hold 2",
    ]
    assert capacity_problems([Demand("big", 8, 1, 1, 1)], groups)[0].startswith("no node can hold")


def kuberay_admission_errors(rayservice: dict[str, Any]) -> list[str]:
    """Rules of KubeRay's webhook and controller (ValidateRayServiceSpec) that its CRD cannot express."""
    errors = []
    spec, cluster = rayservice["spec"], rayservice["spec"]["rayClusterConfig"]
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", rayservice["metadata"]["name"]):
        errors.append("the name is not a DNS-1035 label")
    if spec.get("upgradeStrategy", {}).get("type", "NewCluster") not in UPGRADE_STRATEGIES:
        errors.append(f"upgradeStrategy.type must be one of {sorted(UPGRADE_STRATEGIES)}")
    head = cluster["headGroupSpec"]
    if head.get("headService", {}).get("metadata", {}).get("name"):
        errors.append("headGroupSpec.headService.metadata.name must not be set")
    head_env = {entry["name"] for entry in head["template"]["spec"]["containers"][0].get("env", [])}
    if "gcsFaultToleranceOptions" in cluster:
        # KubeRay sets these itself from gcsFaultToleranceOptions, and refuses a second definition.
        errors += [
            f"head env {name} clashes with gcsFaultToleranceOptions"
            for name in {"REDIS_PASSWORD", "RAY_REDIS_ADDRESS"} & head_env
        ]
        errors += [
            f"head rayStartParams {key} clashes with gcsFaultToleranceOptions"
            for key in {"redis-password"} & set(head["rayStartParams"])
        ]
    if "REDIS_USERNAME" in head_env or "redis-username" in head["rayStartParams"]:
        errors.append("a Redis username belongs in gcsFaultToleranceOptions.redisUsername")
    for group in [head, *cluster["workerGroupSpecs"]]:
        name = group.get("groupName", "head")
        if {"num-cpus", "num-gpus", "memory", "resources"} & set(group.get("rayStartParams", {})) and group.get(
            "resources"
        ):
            errors.append(f"{name}: resources in both rayStartParams and resources")
        if "labels" in group.get("rayStartParams", {}):
            errors.append(f"{name}: rayStartParams.labels is refused; use labels")
    autoscaler_v2 = cluster.get("autoscalerOptions", {}).get("version") == "v2"
    for group in cluster["workerGroupSpecs"]:
        if not 0 <= group["minReplicas"] <= group["maxReplicas"]:
            errors.append(f"{group['groupName']}: minReplicas must be between 0 and maxReplicas")
        if "idleTimeoutSeconds" in group and not autoscaler_v2:
            errors.append(f"{group['groupName']}: idleTimeoutSeconds needs autoscalerOptions.version v2")
    ray_version = tuple(int(part) for part in cluster.get("rayVersion", "0").split(".")[:2])
    if cluster.get("authOptions", {}).get("mode") == "token" and ray_version < (2, 52):
        errors.append("authOptions.mode token needs rayVersion 2.52 or later")
    return errors


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kuberay_would_admit_the_rayservice(kustomization: str) -> None:
    assert kuberay_admission_errors(the(rendered(kustomization), "RayService")) == []


def test_kuberay_rules_catch_a_clash_with_gcs_fault_tolerance() -> None:
    rayservice = the(rendered("base"), "RayService")
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["env"].append({"name": "REDIS_PASSWORD", "value": "x"})
    assert kuberay_admission_errors(rayservice) == ["head env REDIS_PASSWORD clashes with gcsFaultToleranceOptions"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_cluster_autoscales_on_a_head_without_replicas(kustomization: str) -> None:
    cluster = the(rendered(kustomization), "RayService")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert "nvidia.com/gpu" not in str(head["template"]["spec"]["containers"][0]["resources"])
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"], group[
            "groupName"
        ]
    assert any(group["maxReplicas"] > group["minReplicas"] for group in cluster["workerGroupSpecs"])


def test_production_has_a_gpu_group_and_dev_asks_for_no_gpu() -> None:
    assert any(g.gpus >= 1 for g in worker_groups(the(rendered("base"), "RayService")))
    dev = rendered("overlays/dev")
    assert "nvidia.com/gpu" not in yaml.safe_dump(dev)
    assert all(d.gpus == 0 for d in demands(serve_config_of(the(dev, "RayService"))))


def ray_containers(rayservice: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    return [pod["spec"]["containers"][0] for pod in pods]


def pod_containers(documents: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for document in documents:
        if document["kind"] == "RayService":
            for container in ray_containers(document):
                yield f"RayService/{container['name']}", container
        elif document["kind"] == "Deployment":
            for container in document["spec"]["template"]["spec"]["containers"]:
                yield f"Deployment/{document['metadata']['name']}/{container['name']}", container


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_container_has_resources_and_probes(kustomization: str) -> None:
    for name, container in pod_containers(rendered(kustomization)):
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name}: {bound}"
        assert "readinessProbe" in container and "livenessProbe" in container, name


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_ray_node_gets_the_same_environment(kustomization: str) -> None:
    """Serve may put any replica, the scheduler or the workflow executor on any node."""
    containers = ray_containers(the(rendered(kustomization), "RayService"))
    assert all(container["env"] == containers[0]["env"] for container in containers)
    names = {entry["name"] for entry in containers[0]["env"]}
    assert {"LABUBU_JWT_SECRET", "LABUBU_API_KEY_SECRET", "LABUBU_REDIS_URL", "LABUBU_S3_BUCKET"} <= names


# What the platform's processes read from their environment as credentials (serve_app/settings.py),
# and the Redis password that LABUBU_REDIS_URL is built from.
PLATFORM_SECRETS = {
    "LABUBU_JWT_SECRET",
    "LABUBU_API_KEY_SECRET",
    "STATE_REDIS_PASSWORD",
    "GEMINI_API_KEY",
    "ARK_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_ray_node_reads_the_secrets_from_kubernetes_secrets(kustomization: str) -> None:
    """Head and workers alike: the app builder, the replicas and the actors run on any of them."""
    for container in ray_containers(the(rendered(kustomization), "RayService")):
        env = {entry["name"]: entry for entry in container["env"]}
        for name in PLATFORM_SECRETS:
            assert "secretKeyRef" in env[name]["valueFrom"], (container["name"], name)


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_credentials_come_from_secrets_never_inline(kustomization: str) -> None:
    documents = rendered(kustomization)
    assert not [d for d in documents if d["kind"] == "Secret"], "Secrets are made outside kuberay/ (its README)"
    for mapping in walk(documents):
        if isinstance(mapping.get("name"), str) and SECRET_NAME.search(mapping["name"]) and "value" in mapping:
            raise AssertionError(f"{mapping['name']} has an inline value: use valueFrom.secretKeyRef")
    cluster = the(documents, "RayService")["spec"]["rayClusterConfig"]
    assert "secretKeyRef" in cluster["gcsFaultToleranceOptions"]["redisPassword"]["valueFrom"]
    for mapping in walk(serve_config_of(the(documents, "RayService"))):
        assert not {"api_key", "password", "secret"} & set(mapping), mapping


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_state_store_and_gcs_share_the_external_redis(kustomization: str) -> None:
    rayservice = the(rendered(kustomization), "RayService")
    gcs = rayservice["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    env = {entry["name"]: entry for entry in ray_containers(rayservice)[0]["env"]}
    host = gcs["redisAddress"]
    assert env["LABUBU_REDIS_URL"]["value"] == f"redis://:$(STATE_REDIS_PASSWORD)@{host}/1"
    assert env["STATE_REDIS_PASSWORD"]["valueFrom"] == gcs["redisPassword"]["valueFrom"]
    names = [entry["name"] for entry in ray_containers(rayservice)[0]["env"]]
    assert names.index("STATE_REDIS_PASSWORD") < names.index("LABUBU_REDIS_URL")  # $(VAR) needs it defined first
    # The Redis the manifests name exists in the dev overlay (production brings its own).
    if kustomization == "overlays/dev":
        services = {d["metadata"]["name"]: d for d in rendered(kustomization) if d["kind"] == "Service"}
        name, port = host.split(":")
        assert services[name]["spec"]["ports"][0]["port"] == int(port)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_ingress_reaches_the_serve_service(kustomization: str) -> None:
    documents = rendered(kustomization)
    rayservice = the(documents, "RayService")
    service = rayservice["spec"]["serveService"]
    backend = the(documents, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == backend["port"]["name"]]
    assert port["port"] == serve_config_of(rayservice)["http_options"]["port"]


def test_ray_version_and_token_auth() -> None:
    rayservice = the(rendered("base"), "RayService")
    assert rayservice["spec"]["rayClusterConfig"]["rayVersion"] == ray.__version__
    assert rayservice["spec"]["rayClusterConfig"]["authOptions"]["mode"] == "token"


# ---------------------------------------------------------------- cluster.yaml


def test_cluster_yaml_matches_the_launchers_schema() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml_file("cluster.yaml")
    schema = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    jsonschema.validate(config, json.loads(schema.read_text()))  # as written
    validate_config(prepare_config(copy.deepcopy(config)))  # with the provider's defaults filled in


def test_cluster_yaml_installs_starts_and_deploys() -> None:
    config = yaml_file("cluster.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and INSTANCE_TYPES[head["node_config"]["InstanceType"]][1] == 0
    gpu = [t for t in types.values() if INSTANCE_TYPES[t["node_config"]["InstanceType"]][1] > 0]
    assert gpu and all(t["docker"]["worker_image"].endswith("-gpu") for t in gpu)
    assert all('pip install --quiet -e ".[gpu' in " ".join(t["worker_setup_commands"]) for t in gpu)
    assert any("pip install" in command and "-e" in command for command in config["setup_commands"])
    assert all(
        ray.__version__ in image for image in (config["docker"]["image"], *(t["docker"]["worker_image"] for t in gpu))
    )
    start = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert start.count("RAY_AUTH_MODE=token ray start") == 2  # RAY_NOTES.md: say the mode explicitly
    (deploy,) = [c for c in config["head_start_ray_commands"] if "serve deploy" in c]
    (path,) = re.findall(r"serve deploy ~/labubu/(\S+)", deploy)
    assert (ROOT / path).is_file() and config["file_mounts"]["~/labubu"] == "."


def makefile_run_recipe() -> str:
    """`make run`'s command, with the Makefile's variables it uses expanded (`make -n`)."""
    result = subprocess.run(["make", "-n", "run", "VENV=.venv-none"], cwd=ROOT, capture_output=True, text=True)
    return result.stdout


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    """A container's env as names and plain values (None for one taken from a Secret)."""
    return {entry["name"]: entry.get("value") for entry in container["env"]}


def environments_of_ray_start() -> list[str]:
    """What precedes `ray start` in each of the cluster launcher's start commands (head, workers)."""
    config = yaml_file("cluster.yaml")
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    return [command.split("ray start")[0] for command in commands if "ray start" in command]


def assignments(env: dict[str, str]) -> list[str]:
    return [f"{name}={value}" for name, value in env.items()]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_way_of_running_sets_serves_request_path_options(kustomization: str) -> None:
    """Serve reads them from each process's environment when it starts: `make run`, every Ray
    node's env in the RayService, and `ray start` on every node of the cluster launcher."""
    for container in ray_containers(the(rendered(kustomization), "RayService")):
        assert SERVE_REQUEST_PATH_ENV.items() <= container_env(container).items(), container["name"]
    wanted = assignments(SERVE_REQUEST_PATH_ENV)
    recipe = makefile_run_recipe()
    assert "serve run" in recipe and all(assignment in recipe for assignment in wanted)
    for before_start in environments_of_ray_start():
        assert all(assignment in before_start for assignment in wanted), before_start


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_node_of_the_rayservice_runs_haproxy_in_place_of_serves_proxy(kustomization: str) -> None:
    for container in ray_containers(the(rendered(kustomization), "RayService")):
        assert CLUSTER_INGRESS_ENV.items() <= container_env(container).items(), container["name"]


def test_the_cluster_launcher_runs_haproxy_and_make_run_keeps_serves_proxy() -> None:
    """`make run` is one machine: Serve's HAProxy would bind its stats and metrics ports on every interface."""
    starts = environments_of_ray_start()
    assert len(starts) == 2
    for before_start in starts:
        assert all(assignment in before_start for assignment in assignments(CLUSTER_INGRESS_ENV)), before_start
    recipe = makefile_run_recipe()
    assert "serve run" in recipe and not any(name in recipe for name in CLUSTER_INGRESS_ENV)
