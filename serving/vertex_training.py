"""Multi-worker fine-tuning on Vertex AI: a ``CustomContainerTrainingJob`` of our image.

:func:`train` makes the calls on an :class:`~serving.vertex_sdk.Sdk` (the real SDK, or
for ``keras-vit deploy vertex train --dry-run`` the recording one):

1. ``aiplatform.init`` with project, region and staging bucket;
2. ``aiplatform.CustomContainerTrainingJob`` with our training image; every replica
   runs ``keras-vit train --strategy multi_worker`` with the same arguments;
3. ``job.run`` with ``replica_count``: the SDK makes worker pool 0 the chief (one
   replica; Vertex sets its ``TF_CONFIG`` task type to ``chief``) and pool 1 the other
   workers. Also the service account, a timeout and ``restart_job_on_worker_restart``:
   when one VM is restarted every worker restarts, and all resume from the chief's
   backup.

Vertex mounts Cloud Storage buckets at ``/gcs/BUCKET`` in every replica, so
``--output`` and ``--data`` are given as ``/gcs/...`` paths: the chief's
model directory and backup are then on storage all workers see, which the
multi-worker resume needs (docs/training.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from serving.vertex import _ACCELERATOR, _BUCKET, _LABEL, _PROJECT, _REGION
from serving.vertex_sdk import Sdk

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


def train(config: VertexTrainConfig, sdk: Sdk, log=print) -> Any:
    """Starts the job and waits for it; returns the ``CustomContainerTrainingJob``."""
    config.validate()
    ai = sdk.aiplatform
    ai.init(project=config.project, location=config.region, staging_bucket=config.bucket)
    job = ai.CustomContainerTrainingJob(
        display_name=config.display_name,
        container_uri=config.image_uri,
        command=["keras-vit"],
        labels=dict(config.labels),
        staging_bucket=config.bucket,
    )
    run: dict[str, Any] = {
        "args": config.container_args(),
        "replica_count": config.workers,  # the chief and workers - 1 (the SDK splits them)
        "machine_type": config.machine_type,
        "boot_disk_type": "pd-ssd",
        "boot_disk_size_gb": config.boot_disk_gb,
        "base_output_dir": config.output,
        "timeout": config.timeout_seconds,
        "restart_job_on_worker_restart": True,
        "sync": True,
    }
    if config.accelerator_type:
        run |= {
            "accelerator_type": config.accelerator_type,
            "accelerator_count": config.accelerator_count,
        }
    if config.service_account:
        run["service_account"] = config.service_account
    log(f"starting {config.workers} replicas of {config.image_uri}")
    job.run(**run)
    return job
