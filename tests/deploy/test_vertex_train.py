"""``keras-vit deploy vertex train --dry-run``: the CustomJob plan of multi-worker fine-tuning,
checked against google-cloud-aiplatform's real signatures and protos; the TF_CONFIG Vertex
sets (chief + workers) makes exactly one chief."""

from __future__ import annotations

import inspect
import json
from types import SimpleNamespace

import pytest

from keras_vit.cli import main
from serving.vertex_training import VertexTrainConfig, build_train_plan, gcs_fuse_path

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


def test_dry_run_builds_a_chief_pool_and_a_worker_pool(capsys) -> None:
    assert main(ARGS) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [s["call"] for s in plan["steps"]] == [
        "google.cloud.aiplatform.init",
        "google.cloud.aiplatform.CustomJob",
        "google.cloud.aiplatform.CustomJob.run",
    ]
    chief, workers = plan["steps"][1]["kwargs"]["worker_pool_specs"]
    assert (chief["replica_count"], workers["replica_count"]) == (1, 2)
    for pool in (chief, workers):
        container = pool["container_spec"]
        assert container["image_uri"].endswith("/keras-vit-train:0.1.0")
        assert container["command"] == ["keras-vit"]
        assert container["args"][:4] == [
            "train",
            "--strategy=multi_worker",
            "--data=/gcs/my-bucket/flowers/train",
            "--output=/gcs/my-bucket/runs/flowers",
        ]
        assert container["args"][4:] == ARGS[ARGS.index("--") + 1 :]
        assert pool["machine_spec"]["accelerator_type"] == "NVIDIA_L4"
    assert chief["container_spec"] == workers["container_spec"]  # every replica, one command
    run = plan["steps"][2]
    assert run["target"] == "${job}" and run["kwargs"]["restart_job_on_worker_restart"] is True


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"workers": 1}, "at least 2"),
        ({"output": "/local/run"}, "must be a gs:// URI"),
        ({"image_uri": "keras-vit-train"}, "REGISTRY/PATH:TAG"),
        ({"train_args": ["--strategy=mirrored"]}, "set by the job"),
        ({"accelerator_count": 0}, "together"),
    ],
)
def test_bad_configuration_is_explained(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_train_plan(_config(**changes))


def test_cli_rejects_train_arguments_that_keras_vit_train_rejects(capsys) -> None:
    args = ARGS[: ARGS.index("--") + 1] + ["--epochs", "five"]
    assert main(args) == 2
    assert "keras-vit train rejects" in capsys.readouterr().err


def test_gcs_fuse_path() -> None:
    assert gcs_fuse_path("gs://bkt/x/y/") == "/gcs/bkt/x/y"
    assert gcs_fuse_path("gs://bkt") == "/gcs/bkt"
    with pytest.raises(ValueError):
        gcs_fuse_path("s3://b/x")


def test_plan_binds_to_the_sdk_signatures_and_protos() -> None:
    aiplatform = pytest.importorskip(
        "google.cloud.aiplatform", reason="google-cloud-aiplatform is not installed"
    )
    from google.cloud.aiplatform_v1.types import custom_job

    init, create, run = build_train_plan(_config())
    inspect.signature(aiplatform.init).bind(**init.kwargs)
    inspect.signature(aiplatform.CustomJob.__init__).bind(object(), **create.kwargs)
    inspect.signature(aiplatform.CustomJob.run).bind(object(), **run.kwargs)
    for pool in create.kwargs["worker_pool_specs"]:
        # proto-plus rejects unknown fields and wrong types, as the API would.
        spec = custom_job.WorkerPoolSpec(**pool)
        assert spec.container_spec.image_uri == pool["container_spec"]["image_uri"]
        assert spec.machine_spec.accelerator_type.name == "NVIDIA_L4"


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
