"""``keras-vit deploy vertex train --dry-run``: the CustomContainerTrainingJob calls of
multi-worker fine-tuning, bound to google-cloud-aiplatform's real signatures; the SDK's own
split of the replicas into worker pools and protos; the TF_CONFIG Vertex sets (chief +
workers) makes exactly one chief."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from keras_vit.cli import main
from serving.vertex_sdk import RecordingSdk
from serving.vertex_training import VertexTrainConfig, gcs_fuse_path, train

pytest.importorskip(
    "google.cloud.aiplatform", reason="the vertex extra (google-cloud-aiplatform) is not installed"
)

ARGS = [
    "deploy", "vertex", "train", "--project", "my-project", "--region", "us-central1",
    "--bucket", "gs://my-bucket/staging",
    "--image", "us-docker.pkg.dev/my-project/ml/keras-vit-train:0.1.0",
    "--data", "gs://my-bucket/flowers/train", "--output", "gs://my-bucket/runs/flowers",
    "--workers", "3", "--accelerator-type", "NVIDIA_L4", "--dry-run",
    "--", "--model", "google/vit-base-patch16-224-in21k", "--epochs", "5", "--lr", "3e-5",
]  # fmt: skip


def _config(**changes) -> VertexTrainConfig:
    fields = dict(
        project="my-project",
        region="us-central1",
        image_uri="us-docker.pkg.dev/my-project/ml/keras-vit-train:0.1.0",
        data="gs://my-bucket/flowers/train",
        output="gs://my-bucket/runs/flowers",
        bucket="gs://my-bucket/staging",
        workers=3,
        accelerator_type="NVIDIA_L4",
        accelerator_count=1,
        service_account="sa@my-project.iam.gserviceaccount.com",
        train_args=["--epochs", "5"],
    )
    return VertexTrainConfig(**(fields | changes))


def test_dry_run_runs_one_container_job_on_every_replica(capsys) -> None:
    assert main(ARGS) == 0
    calls = json.loads(capsys.readouterr().out)["calls"]
    assert [c["call"] for c in calls] == [
        "google.cloud.aiplatform.init",
        "google.cloud.aiplatform.CustomContainerTrainingJob",
        "google.cloud.aiplatform.CustomContainerTrainingJob.run",
    ]
    job = calls[1]["kwargs"]
    assert job["container_uri"].endswith("/keras-vit-train:0.1.0")
    assert job["command"] == ["keras-vit"]
    run = calls[2]
    assert run["target"] == "${job}"
    assert run["kwargs"]["replica_count"] == 3
    assert run["kwargs"]["args"][:4] == [
        "train",
        "--strategy=multi_worker",
        "--data=/gcs/my-bucket/flowers/train",
        "--output=/gcs/my-bucket/runs/flowers",
    ]
    assert run["kwargs"]["args"][4:] == ARGS[ARGS.index("--") + 1 :]
    assert run["kwargs"]["accelerator_type"] == "NVIDIA_L4"
    assert run["kwargs"]["restart_job_on_worker_restart"] is True


def test_the_sdk_splits_the_replicas_into_a_chief_and_workers() -> None:
    """What CustomContainerTrainingJob.run does with replica_count: the SDK's own pool specs,
    checked against the API's protos (proto-plus rejects unknown fields and wrong types)."""
    from google.cloud.aiplatform.utils import worker_spec_utils
    from google.cloud.aiplatform_v1.types import custom_job

    sdk = RecordingSdk()
    train(_config(), sdk, log=lambda line: None)
    run = sdk.calls[-1]["kwargs"]
    pools = worker_spec_utils._DistributedTrainingSpec.chief_worker_pool(
        replica_count=run["replica_count"],
        machine_type=run["machine_type"],
        accelerator_count=run["accelerator_count"],
        accelerator_type=run["accelerator_type"],
        boot_disk_type=run["boot_disk_type"],
        boot_disk_size_gb=run["boot_disk_size_gb"],
    ).pool_specs
    assert [pool["replica_count"] for pool in pools] == [1, 2]  # the chief, then the workers
    for pool in pools:
        spec = custom_job.WorkerPoolSpec(**pool)
        assert spec.machine_spec.accelerator_type.name == "NVIDIA_L4"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"workers": 1}, "at least 2"),
        ({"output": "/local/run"}, "must be a gs://"),
        ({"image_uri": "keras-vit-train"}, "REGISTRY/PATH:TAG"),
        ({"train_args": ["--strategy=mirrored"]}, "set by the job"),
        ({"accelerator_count": 0}, "together"),
    ],
)
def test_bad_configuration_is_explained(changes, message) -> None:
    sdk = RecordingSdk()
    with pytest.raises(ValueError, match=message):
        train(_config(**changes), sdk, log=lambda line: None)
    assert sdk.calls == []


def test_cli_rejects_train_arguments_that_keras_vit_train_rejects(capsys) -> None:
    args = ARGS[: ARGS.index("--") + 1] + ["--epochs", "five"]
    assert main(args) == 2
    assert "keras-vit train rejects" in capsys.readouterr().err


def test_gcs_fuse_path() -> None:
    assert gcs_fuse_path("gs://bkt/x/y/") == "/gcs/bkt/x/y"
    assert gcs_fuse_path("gs://bkt") == "/gcs/bkt"
    with pytest.raises(ValueError):
        gcs_fuse_path("s3://b/x")


def test_vertex_tf_config_makes_one_chief() -> None:
    """Vertex names pool 0 ``chief`` and pool 1 ``worker``; only the chief writes."""
    from keras_vit.training.distribute import worker_role

    cluster = {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"]}

    def strategy(task_type, task_id):
        resolver = SimpleNamespace(
            task_type=task_type,
            task_id=task_id,
            cluster_spec=lambda: SimpleNamespace(as_dict=lambda: cluster),
        )
        return SimpleNamespace(cluster_resolver=resolver)

    roles = [worker_role(strategy("chief", 0))]
    roles += [worker_role(strategy("worker", i)) for i in range(2)]
    assert [is_chief for is_chief, _ in roles] == [True, False, False]
