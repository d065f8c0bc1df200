"""Multi-worker fine-tuning on Vertex AI: a ``CustomContainerTrainingJob`` of our image.

:func:`train` makes the calls on an :class:`~serving.vertex_sdk.Sdk` (the real SDK, or
for ``keras-vit deploy vertex train --dry-run`` the recording one): ``aiplatform.init``,
``CustomContainerTrainingJob`` of our training image, whose every replica runs
``keras-vit train --strategy multi_worker`` with the same arguments, and ``job.run`` with
``replica_count``. The SDK makes worker pool 0 the chief (one replica; Vertex sets its
``TF_CONFIG`` task type to ``chief``) and pool 1 the other workers.
``restart_job_on_worker_restart``: when one VM is restarted every worker restarts, and
all resume from the chief's backup.

Vertex mounts Cloud Storage buckets at ``/gcs/BUCKET`` in every replica, so ``--output``
and ``--data`` are given as ``/gcs/...`` paths: the chief's model directory and backup
are then on storage all workers see, which the multi-worker resume needs
(docs/training.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from serving.vertex import _BUCKET, VertexConfig, gcs_problem, pinned_image_problem
from serving.vertex_sdk import Sdk


def gcs_fuse_path(uri: str) -> str:
    """``gs://bucket/path`` as Vertex's Cloud Storage FUSE mount sees it: ``/gcs/bucket/path``."""
    match = _BUCKET.match(uri)
    if not match:
        raise ValueError(f"{uri!r} is not a gs://BUCKET[/PATH] URI")
    prefix = (match.group("prefix") or "").strip("/")
    return f"/gcs/{match.group('bucket')}" + (f"/{prefix}" if prefix else "")


@dataclass(kw_only=True)
class VertexTrainConfig(VertexConfig):
    """A multi-worker training job."""

    KIND = "training job"
    image_uri: str
    data: str
    output: str
    bucket: str
    workers: int = 2
    machine_type: str = "n1-standard-8"
    display_name: str = "keras-vit-train"
    train_args: list[str] = field(default_factory=list)
    timeout_seconds: int = 24 * 3600
    boot_disk_gb: int = 100

    def problems(self) -> list[str]:
        problems = super().problems()
        problems += pinned_image_problem("image_uri (our training image)", self.image_uri)
        problems += gcs_problem("bucket", self.bucket)
        # Every worker reads the data, and the chief's backup must be shared.
        problems += gcs_problem("data", self.data, ": every worker reads it")
        problems += gcs_problem("output", self.output, ": the chief's backup must be shared")
        if self.workers < 2:
            problems.append(
                f"workers must be at least 2 (a chief and a worker), got {self.workers}"
            )
        if self.timeout_seconds < 60:
            problems.append("timeout must be at least 60 seconds")
        for argument in self.train_args:
            if argument.split("=", 1)[0] in ("--strategy", "--output", "--data"):
                problems.append(f"{argument!r} is set by the job; drop it from the train arguments")
        return problems

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
    log(f"starting {config.workers} replicas of {config.image_uri}")
    job.run(
        args=config.container_args(),
        replica_count=config.workers,  # the chief and workers - 1 (the SDK splits them)
        boot_disk_type="pd-ssd",
        boot_disk_size_gb=config.boot_disk_gb,
        base_output_dir=config.output,
        timeout=config.timeout_seconds,
        restart_job_on_worker_restart=True,
        **config.machine(),
        sync=True,
    )
    return job
