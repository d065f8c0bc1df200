"""Vertex AI batch prediction: a ``BatchPredictionJob`` over JSON Lines of base64 images.

The managed alternative to ``keras-vit batch-predict`` on Beam: Vertex starts replicas of
the model's serving container, sends them the lines of the input files and writes
the predictions to Cloud Storage. No endpoint is involved.

**Input.** Write the input with :func:`write_instances`
(``keras-vit deploy vertex batch-input``). It is one JSON object per line, named after
the ``serving_default`` input (docs/serving-contract.md):
``{"image_bytes": {"b64": "<base64 of the encoded file>"}}``. Vertex puts lines, several
at a time (``batch_size``, 64 by default), into ``{"instances": [line, ...]}``. It
sends that to the container's predict route. With the prebuilt TensorFlow container,
or our TF Serving image, that route is TF Serving's REST predict, which decodes
``{"b64"}`` itself.

**Limits.** Vertex documents a 1.5 MB limit (1,572,864 bytes) for a prediction request
(:data:`serving.client.client.VERTEX_MAX_REQUEST_BYTES`). Its batch prediction pages
name no separate per-instance limit. An instance must still fit into one request by
itself, so a line may take :data:`MAX_LINE_BYTES`: the request limit less the
``{"instances": []}`` wrapper. After base64, that leaves :data:`MAX_IMAGE_BYTES`
(1,179,612 bytes) per encoded image. Larger images are refused, and all of them are
listed. Shrink those images, or use the Beam pipeline, which has no such limit. Lines
are batched ``batch_size`` at a time, so keep ``batch_size`` times the typical line
size in mind too: the replica holds a whole batch in memory.

**Calls.** :func:`batch_predict` makes them on an :class:`~serving.vertex_sdk.Sdk`, the
real one or, for ``--dry-run``, the recording one (no network or credentials):

1. ``aiplatform.init``;
2. upload local instance files (checked first) to ``gs://BUCKET/PREFIX/<job name>/instances/``,
   never replacing an object without ``overwrite``;
3. with ``--model-dir``: ``Model.upload`` as ``keras-vit deploy vertex`` does. With
   ``--model``, a Model Registry resource name or id, nothing is uploaded;
4. ``aiplatform.BatchPredictionJob.create`` with ``instances_format="jsonl"``,
   ``predictions_format="jsonl"``, the ``gcs_source`` list, ``gcs_destination_prefix``,
   machine type, accelerator and replica counts.

Batch prediction jobs do not autoscale. Vertex splits the input over
``starting_replica_count`` replicas when the job starts.
"""

from __future__ import annotations

import base64
import binascii
import csv
import glob
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving import file_formats
from serving.client.client import VERTEX_MAX_REQUEST_BYTES
from serving.client.files import expand_image_arguments
from serving.image_files import (
    ImageFileError,
    leaves_folder,
    outside_reason,
    pattern_folder,
    read_image_file,
)
from serving.vertex import (
    _ACCELERATOR,
    _BUCKET,
    _LABEL,
    _PROJECT,
    _REGION,
    VertexDeployConfig,
    init,
    model_source_problems,
    upload_model,
)
from serving.vertex_sdk import Sdk

INPUT_NAME = "image_bytes"  # serving_default's input
MAX_LINE_BYTES = VERTEX_MAX_REQUEST_BYTES - len('{"instances": []}')
_LINE_OVERHEAD = len(json.dumps({INPUT_NAME: {"b64": ""}}))
MAX_IMAGE_BYTES = (MAX_LINE_BYTES - _LINE_OVERHEAD) // 4 * 3
# What the exported model's decoder reads (PIL's names for them).
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
_MODEL = re.compile(r"^(projects/[^/]+/locations/[^/]+/models/)?[A-Za-z0-9_-]+(@[A-Za-z0-9_-]+)?$")
_MAX_LISTED = 20


class InstanceError(ValueError):
    """The images or the JSON Lines cannot be batch prediction input; the message lists why."""


def instance_line(data: bytes) -> str:
    """One JSON Lines instance for the encoded image ``data`` (no newline)."""
    return json.dumps({INPUT_NAME: {"b64": base64.b64encode(data).decode("ascii")}})


def decode_instance(line: str | bytes) -> bytes:
    """The image bytes of one instance, ``{"image_bytes": {"b64"}}`` or ``{"b64"}``."""
    try:
        instance = json.loads(line)
    except ValueError as error:
        raise InstanceError(f"not JSON ({error})") from None
    if isinstance(instance, dict) and set(instance) == {INPUT_NAME}:
        instance = instance[INPUT_NAME]
    if not (isinstance(instance, dict) and set(instance) == {"b64"}):
        raise InstanceError(f'expected {{"{INPUT_NAME}": {{"b64": "..."}}}} or {{"b64": "..."}}')
    if not isinstance(instance["b64"], str):
        raise InstanceError('"b64" must be a string')
    try:
        return base64.b64decode(instance["b64"], validate=True)
    except (binascii.Error, ValueError) as error:
        raise InstanceError(f'"b64" is not base64 ({error})') from None


def image_format(data: bytes) -> str | None:
    """PIL's format name of encoded image bytes (read from the header only), or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _listing(problems: Sequence[str]) -> str:
    shown = [f"  {p}" for p in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        shown.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    return "\n".join(shown)


def expand_images(arguments: Sequence[str]) -> list[str]:
    """Image files of folders (recursively), globs (``photos/**/*.jpg``) and files."""
    expanded, problems = [], []
    for argument in arguments:
        if glob.has_magic(argument):
            # Not only regular files: a pipe or device matched gets its own error when read.
            matches = sorted(p for p in glob.glob(argument, recursive=True) if not os.path.isdir(p))
            if not matches:
                problems.append(f"{argument}: the pattern matches no file")
            folder = pattern_folder(argument)
            for path in matches:
                if leaves_folder(path, folder):
                    problems.append(f"{path}: {outside_reason(folder)}")
                else:
                    expanded.append(path)
        else:
            expanded.append(argument)
    files, missing = expand_image_arguments(expanded, recursive=True)
    problems += [f"{argument}: {problem}" for argument, problem in missing]
    if problems:
        raise InstanceError("no input images from:\n" + _listing(problems))
    return list(dict.fromkeys(files))  # a file named twice is predicted once


def write_instances(images: Sequence[str], output: str | os.PathLike) -> list[dict[str, Any]]:
    """Writes the JSON Lines of ``images`` (after :func:`expand_images`) to ``output``.

    Every image is checked first: an image larger than :data:`MAX_IMAGE_BYTES`, or a
    file that is no JPEG/PNG/GIF/BMP/WebP, makes an :class:`InstanceError` listing all
    of them, and nothing is written. Beside the output, ``OUTPUT.files.csv`` names each
    line's file and the SHA-256 of its bytes. Vertex echoes every instance next to its
    prediction, so that hash leads a prediction back to its file. Returns those rows.
    """
    rows, problems = [], []
    for path in images:
        try:
            data = _read(path)
        except ImageFileError as error:
            problems.append(str(error))
            continue
        if image_format(data) not in IMAGE_FORMATS:
            problems.append(
                f"{path}: not a {'/'.join(IMAGE_FORMATS)} image ({file_formats.describe(data)})"
            )
            continue
        digest = hashlib.sha256(data).hexdigest()
        rows.append({"path": str(path), "bytes": len(data), "sha256": digest})
    if problems:
        raise InstanceError(
            f"{len(problems)} of {len(images)} images cannot be batch prediction instances; "
            "nothing was written:\n" + _listing(problems)
        )
    if not rows:
        raise InstanceError("no images given")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with open(partial, "w", encoding="ascii", newline="\n") as lines:
        for line_number, row in enumerate(rows, start=1):
            row["line"] = line_number
            data = _read(row["path"])
            if hashlib.sha256(data).hexdigest() != row["sha256"]:
                raise InstanceError(f"{row['path']} changed while the instances were written")
            lines.write(instance_line(data) + "\n")
    with open(output.with_name(output.name + ".files.csv"), "w", newline="") as manifest:
        writer = csv.DictWriter(manifest, fieldnames=["line", "path", "bytes", "sha256"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, output)
    return rows


def _read(path: str) -> bytes:
    """A regular file of at most :data:`MAX_IMAGE_BYTES` (serving.image_files)."""
    return read_image_file(
        path,
        MAX_IMAGE_BYTES,
        setting="the most an instance may hold: Vertex's 1.5 MB request limit, after base64",
    )


def check_instances_file(path: str | os.PathLike) -> int:
    """Checks every line of a local JSON Lines file; returns the count of instances.

    Each line must be an instance of :func:`decode_instance` holding image bytes, at most
    :data:`MAX_LINE_BYTES` long. Every bad line is listed in one :class:`InstanceError`.
    """
    problems, count = [], 0
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as error:
        raise InstanceError(f"cannot read {path}: {error.strerror or error}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            count += 1
            if len(line) > MAX_LINE_BYTES:
                problems.append(
                    f"line {number}: {len(line):,} bytes, over the {MAX_LINE_BYTES:,} bytes "
                    "an instance may take (Vertex's 1.5 MB request limit)"
                )
                continue
            try:
                data = decode_instance(line)
            except InstanceError as error:
                problems.append(f"line {number}: {error}")
                continue
            if image_format(data) not in IMAGE_FORMATS:
                problems.append(f"line {number}: the bytes are not a JPEG/PNG/GIF/BMP/WebP image")
    if problems:
        raise InstanceError(f"{path}: {len(problems)} bad lines:\n" + _listing(problems))
    if count == 0:
        raise InstanceError(f"{path} holds no instances")
    return count


@dataclass
class VertexBatchConfig:
    """A batch prediction job. :meth:`validate` explains every bad value at once.

    ``instances`` are local JSON Lines files (checked, then uploaded under ``bucket``) or
    ``gs://`` URIs (wildcards allowed, as Vertex accepts them). The model is ``model``,
    a Model Registry resource name or id, or ``model_dir``, uploaded as by
    ``keras-vit deploy vertex``.
    """

    project: str
    region: str
    instances: list[str]
    output: str
    bucket: str | None = None
    model: str | None = None
    model_dir: Path | str | None = None
    model_display_name: str = "keras-vit"
    container_image_uri: str | None = None
    job_display_name: str = "keras-vit-batch"
    machine_type: str = "n1-standard-4"
    accelerator_type: str | None = None
    accelerator_count: int = 0
    starting_replica_count: int = 1
    max_replica_count: int | None = None
    batch_size: int = 64
    service_account: str | None = None
    labels: dict[str, str] = field(default_factory=lambda: {"app": "keras-vit"})
    overwrite: bool = False

    # The model upload of `keras-vit deploy vertex` reads it.
    gpu = VertexDeployConfig.gpu

    def validate(self) -> None:
        problems = []
        if not _PROJECT.match(self.project or ""):
            problems.append(f"project {self.project!r} is not a Google Cloud project id")
        if not _REGION.match(self.region or ""):
            problems.append(f"region {self.region!r} is not a region like us-central1")
        if (self.model is None) == (self.model_dir is None and self.container_image_uri is None):
            problems.append(
                "give the model as --registry-model (a Model Registry resource name or id) or as "
                "--model-dir / --container-image-uri (uploaded first), not both or neither"
            )
        elif self.model is not None:
            if not _MODEL.match(self.model):
                problems.append(
                    f"model {self.model!r} is not projects/P/locations/R/models/ID or an id"
                )
        else:
            problems += model_source_problems(self)
        if not self.instances:
            problems.append("give at least one instances file")
        for source in self.instances:
            if source.startswith("gs://"):
                if not _BUCKET.match(source):
                    problems.append(f"instances {source!r} is not a gs://BUCKET/PATH URI")
            elif not Path(source).is_file():
                problems.append(f"instances file {source!r} does not exist")
            elif not _BUCKET.match(self.bucket or ""):
                problems.append(f"a local instances file needs --bucket gs://BUCKET: {source}")
        if not (self.output or "").startswith("gs://") or not _BUCKET.match(self.output):
            problems.append(f"output {self.output!r} must be a gs://BUCKET[/PREFIX]")
        if self.accelerator_type and not _ACCELERATOR.match(self.accelerator_type):
            problems.append(f"accelerator_type {self.accelerator_type!r} is not like NVIDIA_L4")
        if bool(self.accelerator_type) != (self.accelerator_count > 0):
            problems.append("give accelerator type and a positive accelerator count together")
        if self.starting_replica_count < 1:
            problems.append("starting_replica_count must be >= 1")
        if self.max_replica_count is not None and self.max_replica_count < (
            self.starting_replica_count
        ):
            problems.append("max_replica_count is below starting_replica_count")
        if not 1 <= self.batch_size <= 10_000:
            problems.append(f"batch_size must be within 1..10000, got {self.batch_size}")
        for key, value in self.labels.items():
            if not _LABEL.match(key) or not re.fullmatch(r"[a-z0-9_-]{0,63}", value):
                problems.append(f"label {key}={value} is not a valid Vertex label")
        if problems:
            raise ValueError("invalid Vertex batch prediction:\n  - " + "\n  - ".join(problems))

    def instances_uri(self, local: str) -> str:
        """Where a local instances file is uploaded: ``gs://BUCKET/PREFIX/<job>/instances/``."""
        match = _BUCKET.match(self.bucket or "")
        assert match, "validate() first"
        prefix = (match["prefix"] or "").strip("/")
        parts = [p for p in (prefix, self.job_display_name, "instances", Path(local).name) if p]
        return f"gs://{match['bucket']}/" + "/".join(parts)


def batch_predict(
    config: VertexBatchConfig,
    sdk: Sdk,
    check_files: bool = True,
    log: Callable[[str], None] = print,
) -> Any:
    """Checks and uploads the instances, uploads the model if asked, creates the job.

    Returns the ``BatchPredictionJob``; see the module docstring for the calls."""
    config.validate()
    if check_files:
        for source in config.instances:
            if not source.startswith("gs://"):
                check_instances_file(source)
    init(sdk.aiplatform, config)
    sources = []
    client = None
    for source in config.instances:
        if source.startswith("gs://"):
            sources.append(source)
            continue
        destination = config.instances_uri(source)
        client = client or sdk.storage.Client(project=config.project)
        blob = sdk.storage.Blob.from_string(destination, client=client)
        # Without overwrite, never replace an object: another job's input stays.
        keep = {} if config.overwrite else {"if_generation_match": 0}
        blob.upload_from_filename(filename=str(source), **keep)
        log(f"uploaded {source} to {destination}")
        sources.append(destination)
    model = config.model if config.model is not None else upload_model(sdk.aiplatform, config)
    create: dict[str, Any] = {
        "job_display_name": config.job_display_name,
        "model_name": model,
        "instances_format": "jsonl",
        "predictions_format": "jsonl",
        "gcs_source": sources,
        "gcs_destination_prefix": config.output,
        "machine_type": config.machine_type,
        "starting_replica_count": config.starting_replica_count,
        "max_replica_count": config.max_replica_count or config.starting_replica_count,
        "batch_size": config.batch_size,
        "labels": dict(config.labels),
        "sync": True,
    }
    if config.accelerator_type:
        create |= {
            "accelerator_type": config.accelerator_type,
            "accelerator_count": config.accelerator_count,
        }
    if config.service_account:
        create["service_account"] = config.service_account
    job = sdk.aiplatform.BatchPredictionJob.create(**create)
    log(f"batch prediction job: {job.resource_name}")
    return job
