"""Fixtures for the deployment tests: the kustomize renderer (real `kubectl kustomize`)
and TF Serving's config-file parsers."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.deploy.deploy_helpers import (
    BUILDS,
    K8S_DIR,
    KUBECTL_INSTALL_HINT,
    build_missing_protos,
    find_kubectl,
)


@pytest.fixture(scope="session")
def kubectl() -> str:
    found = find_kubectl()
    if found is None:
        pytest.skip(f"no kubectl with kustomize >= v5: {KUBECTL_INSTALL_HINT}")
    return found


@pytest.fixture(scope="session")
def rendered_text(kubectl: str) -> dict[str, str]:
    """`kubectl kustomize` output of every build, by build name."""
    texts = {}
    for build in BUILDS:
        result = subprocess.run(
            [kubectl, "kustomize", str(K8S_DIR / build)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"kustomize {build} failed:\n{result.stderr}"
        texts[build] = result.stdout
    return texts


@pytest.fixture(scope="session")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[dict]]:
    """Rendered objects of every build, by build name."""
    return {
        build: [doc for doc in yaml.safe_load_all(text) if doc]
        for build, text in rendered_text.items()
    }


@pytest.fixture(scope="session")
def tfserving_parsers():
    """Text-format parsers for the three config files, by file name."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:  # the generated modules, where a tensorflow-serving-api release ships them
        from tensorflow_serving.config import monitoring_config_pb2
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2

        monitoring_cls = monitoring_config_pb2.MonitoringConfig
        batching_cls = session_bundle_config_pb2.BatchingParameters
    except ImportError:
        monitoring_cls, batching_cls = build_missing_protos()
    classes = {
        "models.config": model_server_config_pb2.ModelServerConfig,
        "monitoring.config": monitoring_cls,
        "batching_parameters.txt": batching_cls,
    }

    def parse(file_name: str, text: str):
        return text_format.Parse(text, classes[file_name]())

    return parse
