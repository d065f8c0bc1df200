"""The Kubernetes manifests: schema validation of every file and every kustomize build
against Kubernetes 1.37 (kubernetes-validate, strict), then what TF Serving and the
Kubernetes docs require of them (ports, probes, threads vs CPU limit, security, HPA)."""

from __future__ import annotations

import copy
import math
import re

import kubernetes_validate
import pytest
import yaml

from tests.deploy.deploy_helpers import (
    BUILDS,
    DOCKER_DIR,
    K8S_DIR,
    KUBERNETES_VERSION,
    threads_for_cpu_limit,
)

CONFIG_FILES = ("models.config", "batching_parameters.txt", "monitoring.config")
SERVER_COMMANDS = {
    False: ["/usr/bin/tensorflow_model_server"],
    True: ["python", "-m", "serving.server"],
}


def validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def base_manifests() -> list[tuple[str, dict]]:
    """Every object in kubernetes/base, by file (the kustomization itself is no object)."""
    found = []
    for path in sorted((K8S_DIR / "base").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def only(docs: list[dict], kind: str) -> dict:
    matching = [doc for doc in docs if doc["kind"] == kind]
    assert len(matching) == 1, f"expected one {kind}, found {len(matching)}"
    return matching[0]


def flags(container: dict) -> dict[str, str]:
    """`--name=value` arguments as a dict; a bare `--name` maps to ''."""
    parsed = {}
    for arg in container.get("args", []):
        assert arg.startswith("--"), f"unexpected argument {arg!r}"
        name, _, value = arg[2:].partition("=")
        assert name not in parsed, f"--{name} given twice"
        parsed[name] = value
    return parsed


def cpu_cores(quantity: str) -> float:
    quantity = str(quantity)
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def check_threads(container: dict) -> int:
    """Asserts the thread flags follow the CPU limit; returns the limit in cores."""
    limit = cpu_cores(container["resources"]["limits"]["cpu"])
    assert limit == int(limit) and limit >= 1, f"CPU limit {limit} is not whole cores"
    cores = int(limit)
    given = flags(container)
    for name, expected in threads_for_cpu_limit(cores).items():
        assert given.get(name) == str(expected), (
            f"--{name}={given.get(name)} but a CPU limit of {cores} needs {expected}"
        )
    return cores


def server(docs: list[dict]) -> tuple[dict, dict]:
    deployment = only(docs, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["tfserving"]
    return deployment, containers[0]


def config_files(docs: list[dict], deployment: dict, container: dict) -> dict[str, str]:
    """Files the server sees under the config mount, from the rendered ConfigMaps."""
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if "projected" in v)
    assert mounts[volume["name"]]["mountPath"] == "/etc/tfserving"
    assert mounts[volume["name"]]["readOnly"] is True
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    files = {}
    for source in volume["projected"]["sources"]:
        name = source["configMap"]["name"]
        assert name in config_maps, f"volume refers to missing ConfigMap {name}"
        files.update(config_maps[name]["data"])
    return files


# --- schema -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "file_name,doc", base_manifests(), ids=lambda v: v if isinstance(v, str) else v.get("kind")
)
def test_base_manifest_is_valid(file_name: str, doc: dict) -> None:
    validate(doc)


@pytest.mark.parametrize("build", BUILDS)
def test_rendered_build_is_valid(build: str, rendered: dict[str, list[dict]]) -> None:
    kinds = sorted(doc["kind"] for doc in rendered[build])
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "ConfigMap",
            "ConfigMap",
            "Service",
            "Service",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ]
    )
    for doc in rendered[build]:
        validate(doc)
        assert doc["metadata"].get("namespace", "keras-vit") == "keras-vit"


def test_validator_is_strict(rendered: dict[str, list[dict]]) -> None:
    """Guards the tests above: a misspelt field must fail, not pass silently."""
    deployment = copy.deepcopy(only(rendered["overlays/cpu"], "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


# --- TF Serving semantics -----------------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_ports_and_probes(build: str, rendered, tfserving_parsers) -> None:
    docs = rendered[build]
    deployment, container = server(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    given = flags(container)
    # TF Serving, or our server with its flags (overlays/int8).
    assert container["command"] == SERVER_COMMANDS[build == "overlays/int8"]
    assert given["port"] == "8500" and given["rest_api_port"] == "8501"

    files = config_files(docs, deployment, container)
    assert given["model_config_file"] == "/etc/tfserving/models.config"
    assert given["monitoring_config_file"] == "/etc/tfserving/monitoring.config"
    models = tfserving_parsers("models.config", files["models.config"])
    names = [c.name for c in models.model_config_list.config]
    assert names == ["vit"]
    monitoring = tfserving_parsers("monitoring.config", files["monitoring.config"])
    assert monitoring.prometheus_config.enable
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == monitoring.prometheus_config.path
    assert annotations["prometheus.io/port"] == "8501"  # TF Serving serves metrics on REST

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == f"/v1/models/{names[0]}", probe
        assert ports[http_get["port"]] == 8501, probe

    for service in (d for d in docs if d["kind"] == "Service"):
        by_name = {p["name"]: p for p in service["spec"]["ports"]}
        assert set(by_name) == {"grpc", "http"}
        assert by_name["grpc"]["port"] == 8500 and by_name["grpc"]["targetPort"] == "grpc"
        assert by_name["http"]["port"] == 8501 and by_name["http"]["targetPort"] == "http"


@pytest.mark.parametrize("build", BUILDS)
def test_threads_follow_cpu_limit(build: str, rendered) -> None:
    _, container = server(rendered[build])
    resources = container["resources"]
    # Guaranteed QoS: requests equal limits for CPU and memory.
    for resource in ("cpu", "memory"):
        assert resources["requests"][resource] == resources["limits"][resource], resource
    check_threads(container)


def test_thread_check_catches_a_mismatch(rendered) -> None:
    _, container = server(copy.deepcopy(rendered["overlays/cpu"]))
    container["resources"]["limits"]["cpu"] = "8"
    with pytest.raises(AssertionError, match="tensorflow_intra_op_parallelism"):
        check_threads(container)


@pytest.mark.parametrize("build", BUILDS)
def test_selectors_match_pod_labels(build: str, rendered) -> None:
    docs = rendered[build]
    deployment, _ = server(docs)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= pod_labels.items()
    for service in (d for d in docs if d["kind"] == "Service"):
        assert service["spec"]["selector"] == selector
    assert only(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    policy = only(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert allowed == {"grpc", "http"}


@pytest.mark.parametrize("build", BUILDS)
def test_security_context(build: str, rendered) -> None:
    deployment, container = server(rendered[build])
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # With a read-only root, the only writable path is an emptyDir.
    writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    assert {m["name"] for m in writable} <= empty_dirs
    namespace = only(rendered[build], "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("build", BUILDS)
def test_autoscaling(build: str, rendered) -> None:
    docs = rendered[build]
    deployment, container = server(docs)
    hpa = only(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    cpu_metrics = [
        m
        for m in hpa["spec"]["metrics"]
        if m["type"] == "Resource" and m["resource"]["name"] == "cpu"
    ]
    assert cpu_metrics and cpu_metrics[0]["resource"]["target"]["type"] == "Utilization"
    # Utilisation is relative to requests: without them the HPA has nothing to compute.
    assert cpu_cores(container["resources"]["requests"]["cpu"]) > 0
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The HPA owns the replica count.
    assert "replicas" not in deployment["spec"]
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


@pytest.mark.parametrize("build", BUILDS)
def test_image_is_pinned(build: str, rendered) -> None:
    _, container = server(rendered[build])
    image = container["image"]
    match = re.fullmatch(
        r"(?P<repo>[^@:]+(?::\d+/[^@:]+)?)(?::(?P<tag>[\w.-]+))?(@sha256:\w+)?", image
    )
    assert match and match.group("tag"), f"{image} has no tag"
    assert match.group("tag") != "latest"
    is_gpu = build == "overlays/gpu"
    assert match.group("tag").endswith("-gpu") == is_gpu
    assert match.group("tag").endswith("-bf16") == (build == "overlays/bf16")
    assert match.group("tag").endswith("-int8") == (build == "overlays/int8")
    # The int8 export runs on our server's image (TF Serving cannot load it).
    repository = match.group("repo").rsplit("/", 1)[-1]
    assert repository == ("keras-vit-serve" if build == "overlays/int8" else "keras-vit-serving")


@pytest.mark.parametrize("build", BUILDS)
def test_batching_flags(build: str, rendered, tfserving_parsers) -> None:
    docs = rendered[build]
    deployment, container = server(docs)
    given = flags(container)
    if build != "overlays/batching":
        assert "enable_batching" not in given and "batching_parameters_file" not in given
        return
    assert given["enable_batching"] == "true"
    path = given["batching_parameters_file"]
    assert path.startswith("/etc/tfserving/")
    files = config_files(docs, deployment, container)
    params = tfserving_parsers("batching_parameters.txt", files[path.rsplit("/", 1)[1]])
    cores = check_threads(container)
    # Batches run concurrently on num_batch_threads, like requests on the inter-op pool.
    assert params.num_batch_threads.value == math.ceil(cores / 2)
    # session_bundle_config.proto: "use 'max_batch_size * 2' client threads to achieve
    # high throughput with batching" (REST handler threads are those clients).
    assert int(given["rest_api_num_threads"]) >= 2 * params.max_batch_size.value
    # The same for gRPC: TF Serving's default --grpc_max_threads is 4 x the schedulable
    # CPUs (server.h), C in a pod with dedicated cores. A one-image request holds a
    # handler thread while it waits, so fewer threads than that cap every batch
    # (benchmarks/results/tune_serving.md).
    grpc_threads = int(given.get("grpc_max_threads", 4 * cores))
    assert grpc_threads >= 2 * params.max_batch_size.value
    # A timeout of 0 (the CPU-only starting point of TF Serving's batching guide) forms
    # batches of 1-2 images even with 16 requests waiting (tune_serving.md).
    assert params.batch_timeout_micros.value > 0
    # No padding on the CPU: padded images are computed for nothing.
    assert not params.allowed_batch_sizes


def test_gpu_overlay(rendered) -> None:
    deployment, container = server(rendered["overlays/gpu"])
    pod = deployment["spec"]["template"]["spec"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert (
        container["resources"]["requests"]["nvidia.com/gpu"]
        == container["resources"]["limits"]["nvidia.com/gpu"]
    )
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    for build in ("base", "overlays/cpu", "overlays/batching"):
        _, cpu_container = server(rendered[build])
        assert "nvidia.com/gpu" not in cpu_container["resources"]["limits"]


NFD_CPUID = "feature.node.kubernetes.io/cpu-cpuid."


def test_bf16_overlay_pins_pods_to_nodes_with_hardware_bf16(rendered) -> None:
    from serving.precision import BF16_CPU_FLAGS

    deployment, container = server(rendered["overlays/bf16"])
    pod = deployment["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    keys = set()
    for term in terms["nodeSelectorTerms"]:  # ORed: either feature will do
        [expression] = term["matchExpressions"]
        assert expression["operator"] == "In" and expression["values"] == ["true"]
        keys.add(expression["key"])
    # NFD names cpuid flags as klauspost/cpuid does: /proc/cpuinfo's avx512_bf16 is
    # cpu-cpuid.AVX512BF16; the export's CPU check and the node selection agree.
    assert keys == {NFD_CPUID + flag.replace("_", "").upper() for flag in BF16_CPU_FLAGS}
    assert deployment["metadata"]["labels"]["keras-vit/precision"] == "bfloat16"
    # Otherwise it is the cpu flavour: same server arguments, resources and probes.
    _, cpu_container = server(rendered["overlays/cpu"])
    for key in ("args", "resources", "readinessProbe", "livenessProbe", "ports"):
        assert container.get(key) == cpu_container.get(key), key
    for build in ("base", "overlays/cpu", "overlays/gpu", "overlays/batching"):
        other, _ = server(rendered[build])
        assert "affinity" not in other["spec"]["template"]["spec"], build


def node_affinity_keys(deployment: dict) -> set[str]:
    pod = deployment["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    keys = set()
    for term in terms["nodeSelectorTerms"]:  # ORed: any feature will do
        [expression] = term["matchExpressions"]
        assert expression["operator"] == "In" and expression["values"] == ["true"]
        keys.add(expression["key"])
    return keys


def test_int8_overlay_is_the_cpu_flavour_on_our_server_and_vnni_nodes(rendered) -> None:
    from serving.server.options import build_parser, check_options, options_from_args

    deployment, container = server(rendered["overlays/int8"])
    # NFD's names (klauspost/cpuid) of /proc/cpuinfo's avx512_vnni, avx_vnni and amx_int8.
    assert node_affinity_keys(deployment) == {
        NFD_CPUID + "AVX512VNNI",
        NFD_CPUID + "AVXVNNI",
        NFD_CPUID + "AMXINT8",
    }
    assert deployment["metadata"]["labels"]["keras-vit/precision"] == "int8"
    _, cpu_container = server(rendered["overlays/cpu"])
    for key in ("resources", "startupProbe", "readinessProbe", "livenessProbe", "ports"):
        assert container.get(key) == cpu_container.get(key), key
    # TF Serving's flags, then what our server needs to be reached and to drain in time.
    assert container["args"][: len(cpu_container["args"])] == cpu_container["args"]
    options = options_from_args(build_parser().parse_args(container["args"]))
    assert check_options(options) is None
    assert options.host == "0.0.0.0"
    pod = deployment["spec"]["template"]["spec"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop + options.shutdown_grace_seconds < pod["terminationGracePeriodSeconds"]
    # The HPA and PodDisruptionBudget of the cpu flavour (test_autoscaling checks them).
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert (
            only(rendered["overlays/int8"], kind)["spec"]
            == only(rendered["overlays/cpu"], kind)["spec"]
        )


def test_configmaps_are_copies_of_the_image_configs() -> None:
    for name in CONFIG_FILES:
        assert (K8S_DIR / "base" / "config" / name).read_text() == (
            DOCKER_DIR / name
        ).read_text(), name


def test_config_change_rolls_the_deployment(rendered) -> None:
    """Generated ConfigMap names carry a content hash, so an edit restarts the pods."""
    names = [d["metadata"]["name"] for d in rendered["base"] if d["kind"] == "ConfigMap"]
    assert all(re.fullmatch(r"vit-[a-z]+-config-[a-z0-9]{10}", n) for n in names), names
