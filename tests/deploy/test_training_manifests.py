"""kubernetes/training: the Indexed Job + headless Service of multi-worker fine-tuning.

The kustomize build is schema-validated (kubernetes-validate, strict) and
scanned by checkov like the serving builds; the entrypoint is run as the pods
run it, with a stand-in ``keras-vit`` that records TF_CONFIG and its
arguments, which the real command-line parser then accepts.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy.deploy_helpers import K8S_DIR, KUBERNETES_VERSION
from tests.deploy.test_checkov_scan import assert_clean, run_checkov

TRAINING = K8S_DIR / "training"


@pytest.fixture(scope="module")
def training_text(kubectl: str) -> str:
    result = subprocess.run(
        [kubectl, "kustomize", str(TRAINING)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def training(training_text: str) -> dict[str, dict]:
    docs = [doc for doc in yaml.safe_load_all(training_text) if doc]
    by_kind = {}
    for doc in docs:
        assert doc["kind"] not in by_kind, f"two {doc['kind']} objects"
        by_kind[doc["kind"]] = doc
    return by_kind


def test_every_object_is_valid(training: dict[str, dict]) -> None:
    assert set(training) == {
        "ServiceAccount",
        "Service",
        "PersistentVolumeClaim",
        "Job",
        "NetworkPolicy",
        "ConfigMap",
    }
    for doc in training.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == "keras-vit"


def _worker(job: dict) -> dict:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def test_indexed_job_and_headless_service_agree(training: dict[str, dict]) -> None:
    job, service = training["Job"], training["Service"]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    env = _env(_worker(job))
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(env["WORKERS"]) >= 2
    assert pod["restartPolicy"] == "OnFailure"  # a lost peer restarts the others in place
    # Pod DNS names <job>-<index>.<subdomain> exist only through a headless Service.
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert pod["subdomain"] == service["metadata"]["name"] == env["SERVICE_NAME"]
    assert env["JOB_NAME"] == job["metadata"]["name"]
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": env["JOB_NAME"]}
    (port,) = service["spec"]["ports"]
    (container_port,) = _worker(job)["ports"]
    assert port["port"] == port["targetPort"] == container_port["containerPort"]
    assert str(port["port"]) == env["WORKER_PORT"]
    policy = training["NetworkPolicy"]["spec"]
    assert policy["ingress"][0]["ports"] == [{"port": port["port"], "protocol": "TCP"}]


def test_entrypoint_derives_tf_config_from_the_completion_index(
    training: dict[str, dict], tmp_path: Path
) -> None:
    job, config_map = training["Job"], training["ConfigMap"]
    container = _worker(job)
    script = tmp_path / "entrypoint.sh"
    script.write_text(config_map["data"]["entrypoint.sh"])
    assert container["command"] == ["/bin/sh", "/etc/keras-vit/entrypoint.sh"]
    fake = tmp_path / "bin" / "keras-vit"
    fake.parent.mkdir()
    fake.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$TF_CONFIG" > "$RECORD"\n'
        'for a in "$@"; do printf "%s\\n" "$a"; done >> "$RECORD"\n'
    )
    fake.chmod(0o755)
    env_vars = _env(container)
    workers = int(env_vars["WORKERS"])
    expected_cluster = [
        f"{env_vars['JOB_NAME']}-{i}.{env_vars['SERVICE_NAME']}:{env_vars['WORKER_PORT']}"
        for i in range(workers)
    ]
    from keras_vit.cli import build_parser

    for index in range(workers):
        record = tmp_path / f"record{index}.txt"
        env = dict(
            os.environ,
            **env_vars,
            JOB_COMPLETION_INDEX=str(index),
            RECORD=str(record),
            PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
        )
        subprocess.run(
            ["/bin/sh", str(script), *container["args"]], env=env, check=True, timeout=30
        )
        tf_config, *argv = record.read_text().splitlines()
        assert json.loads(tf_config) == {
            "cluster": {"worker": expected_cluster},
            "task": {"type": "worker", "index": index},
        }
        args = build_parser().parse_args(argv)
        assert args.strategy == "multi_worker"
        assert args.output.startswith("/keras-vit/") and args.data.startswith("/keras-vit/")

    # Without the index (not an Indexed Job) the entrypoint refuses to start.
    env = {k: v for k, v in os.environ.items() if k != "JOB_COMPLETION_INDEX"}
    failed = subprocess.run(
        ["/bin/sh", str(script)], env=dict(env, **env_vars), capture_output=True, text=True
    )
    assert failed.returncode != 0 and "JOB_COMPLETION_INDEX" in failed.stderr


def test_work_volume_is_shared_and_the_root_filesystem_read_only(training) -> None:
    assert training["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    container = _worker(training["Job"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/keras-vit", "/tmp", "/etc/keras-vit"} <= mounts


def test_checkov_training_build(training_text: str, tmp_path: Path) -> None:
    (tmp_path / "training.yaml").write_text(training_text)
    assert_clean(run_checkov("--framework", "kubernetes", "-d", str(tmp_path)), "kubernetes")


def test_checkov_training_dockerfile() -> None:
    dockerfile = TRAINING.parents[1] / "training" / "Dockerfile"
    assert_clean(run_checkov("--framework", "dockerfile", "-f", str(dockerfile)), "dockerfile")
    text = dockerfile.read_text()
    assert "USER 10001:10001" in text  # the runAsUser of kubernetes/training/job.yaml
    assert 'ENTRYPOINT ["keras-vit"]' in text  # Vertex's container_spec command
