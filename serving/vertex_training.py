"""Multi-worker fine-tuning on Vertex AI: a ``CustomJob`` of a chief pool and a worker pool.

Like :mod:`serving.vertex`, the job is a *plan* of SDK calls with their exact
keyword arguments; ``keras-vit deploy vertex train --dry-run`` prints it
without network or credentials:

1. ``aiplatform.init`` with project, region and staging bucket;
2. ``aiplatform.CustomJob`` with two worker pools running our training image:
   pool 0, one replica, is the chief (Vertex sets its ``TF_CONFIG`` task type to
   ``chief``); pool 1 holds the other workers (``worker``, index 0..N-2). Every
   replica runs ``keras-vit train --strategy multi_worker`` with the same
   arguments;
3. ``CustomJob.run`` with the service account, a timeout and
   ``restart_job_on_worker_restart``: when one VM is restarted every worker
   restarts, and all resume from the chief's backup.

Vertex mounts Cloud Storage buckets at ``/gcs/BUCKET`` in every replica, so
``--output`` and ``--data`` are given as ``/gcs/...`` paths: the chief's
model directory and backup are then on storage all workers see, which the
multi-worker resume needs (docs/training.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from serving.vertex import _ACCELERATOR, _BUCKET, _LABEL, _PROJECT, _REGION, Ref, Step

_IMAGE = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})$")


def gcs_fuse_path(uri: str) -> str:
    """``gs://bucket/path`` as Vertex's Cloud Storage FUSE mount sees it: ``/gcs/bucket/path``."""
    match = _BUCKET.match(uri)
    if not match:
        raise ValueError(f"{uri!r} is not a gs://BUCKET[/PATH] URI")
    prefix = (match.group("prefix") or "").strip("/")
    return f"/gcs/{match.group('bucket')}" + (f"/{prefix}" if prefix else "")


@dataclass
class VertexTrainConfig:
    """A multi-worker training job. :meth:`validate` explains every bad value at once."""

    project: str
    region: str
    image_uri: str
    data: str
    output: str
    bucket: str
    workers: int = 2
    machine_type: str = "n1-standard-8"
    accelerator_type: str | None = None
    accelerator_count: int = 0
    display_name: str = "keras-vit-train"
    train_args: list[str] = field(default_factory=list)
    service_account: str | None = None
    timeout_seconds: int = 24 * 3600
    boot_disk_gb: int = 100
    labels: dict[str, str] = field(default_factory=lambda: {"app": "keras-vit"})

    def validate(self) -> None:
        problems = []
        if not _PROJECT.match(self.project or ""):
            problems.append(f"project {self.project!r} is not a Google Cloud project id")
        if not _REGION.match(self.region or ""):
            problems.append(f"region {self.region!r} is not a region like us-central1")
        if not _IMAGE.match(self.image_uri or ""):
            problems.append(
                f"image {self.image_uri!r} is not REGISTRY/PATH:TAG or @sha256:DIGEST "
                "(our training image, training/Dockerfile, pushed to Artifact Registry)"
            )
        if not _BUCKET.match(self.bucket or ""):
            problems.append(f"bucket {self.bucket!r} is not gs://BUCKET[/PREFIX]")
        for name in ("data", "output"):
            value = getattr(self, name)
            if not (value or "").startswith("gs://") or not _BUCKET.match(value):
                problems.append(
                    f"{name} {value!r} must be a gs:// URI: every worker reads it, and the "
                    "chief's backup must be shared"
                )
        if self.workers < 2:
            problems.append(
                f"workers must be at least 2 (a chief and a worker), got {self.workers}"
            )
        if self.accelerator_type and not _ACCELERATOR.match(self.accelerator_type):
            problems.append(f"accelerator {self.accelerator_type!r} is not like NVIDIA_L4")
        if bool(self.accelerator_type) != (self.accelerator_count > 0):
            problems.append("give accelerator type and a positive count together")
        if self.timeout_seconds < 60:
            problems.append("timeout must be at least 60 seconds")
        for argument in self.train_args:
            if argument.split("=", 1)[0] in ("--strategy", "--output", "--data"):
                problems.append(f"{argument!r} is set by the job; drop it from the train arguments")
        for key in self.labels:
            if not _LABEL.match(key):
                problems.append(f"label key {key!r} is not a Vertex label key")
        if problems:
            raise ValueError("; ".join(problems))

    def container_args(self) -> list[str]:
        return [
            "train",
            "--strategy=multi_worker",
            f"--data={gcs_fuse_path(self.data)}",
            f"--output={gcs_fuse_path(self.output)}",
            *self.train_args,
        ]

    def worker_pool_specs(self) -> list[dict[str, Any]]:
        machine: dict[str, Any] = {"machine_type": self.machine_type}
        if self.accelerator_type:
            machine["accelerator_type"] = self.accelerator_type
            machine["accelerator_count"] = self.accelerator_count

        def pool(replicas: int) -> dict[str, Any]:
            return {
                "machine_spec": dict(machine),
                "replica_count": replicas,
                "container_spec": {
                    "image_uri": self.image_uri,
                    "command": ["keras-vit"],
                    "args": self.container_args(),
                },
                "disk_spec": {"boot_disk_type": "pd-ssd", "boot_disk_size_gb": self.boot_disk_gb},
            }

        return [pool(1), pool(self.workers - 1)]  # the chief, then the other workers


def build_train_plan(config: VertexTrainConfig) -> list[Step]:
    """Every SDK call of the training job, in order. Makes no network call."""
    config.validate()
    run: dict[str, Any] = {
        "timeout": config.timeout_seconds,
        "restart_job_on_worker_restart": True,
        "sync": True,
    }
    if config.service_account:
        run["service_account"] = config.service_account
    return [
        Step(
            "init",
            "google.cloud.aiplatform.init",
            {"project": config.project, "location": config.region, "staging_bucket": config.bucket},
        ),
        Step(
            "custom_job",
            "google.cloud.aiplatform.CustomJob",
            {
                "display_name": config.display_name,
                "worker_pool_specs": config.worker_pool_specs(),
                "base_output_dir": config.output,
                "staging_bucket": config.bucket,
                "labels": dict(config.labels),
            },
            produces="job",
        ),
        Step("run", "google.cloud.aiplatform.CustomJob.run", run, target=Ref("job")),
    ]


def execute_train_plan(plan: list[Step], aiplatform=None, log=print) -> Any:
    """Runs the plan with ``google-cloud-aiplatform`` (imported here); returns the job."""
    if aiplatform is None:
        from google.cloud import aiplatform
    job = None
    for step in plan:
        log(f"{step.name}: {step.call}")
        if step.name == "init":
            aiplatform.init(**step.kwargs)
        elif step.name == "custom_job":
            job = aiplatform.CustomJob(**step.kwargs)
        elif step.name == "run":
            job.run(**step.kwargs)
        else:  # pragma: no cover - the plan has only the steps above
            raise ValueError(f"unknown step {step.name}")
    return job
