"""Vertex AI batch prediction: a ``BatchPredictionJob`` over JSON Lines of base64 images.

The managed alternative to ``keras-vit batch-predict`` on Beam: Vertex starts replicas of
the model's serving container, sends them the input lines ``batch_size`` at a time as
``{"instances": [line, ...]}`` (TF Serving's REST predict, which decodes ``{"b64"}``
itself) and writes the predictions to Cloud Storage. No endpoint is involved.

:func:`write_instances` writes the input, one ``{"image_bytes": {"b64": ...}}`` per image
(the ``serving_default`` input, docs/serving-contract.md). Vertex documents a 1.5 MB limit
(1,572,864 bytes) for a prediction request and names no separate per-instance limit; one
instance must fit into one request, so a line may take :data:`MAX_LINE_BYTES`, which
leaves :data:`MAX_IMAGE_BYTES` (1,179,612 bytes) per encoded image after base64. Larger
images are refused, all of them listed: shrink them, or use the Beam pipeline.

:func:`batch_predict` makes the calls (docs/deployment.md lists them) on an
:class:`~serving.vertex_sdk.Sdk`: local instance files are checked, then uploaded under
``gs://BUCKET/PREFIX/<job name>/instances/`` (never replacing an object without
``overwrite``), the model is uploaded as ``keras-vit deploy vertex`` does (or a Model
Registry one is used as it is), and ``BatchPredictionJob.create`` reads and writes jsonl.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

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
from serving.vertex import _BUCKET, ModelSource, VertexConfig, gcs_problem, init, upload_model
from serving.vertex_sdk import Sdk

INPUT_NAME = "image_bytes"  # serving_default's input
MAX_LINE_BYTES = VERTEX_MAX_REQUEST_BYTES - len('{"instances": []}')
_LINE_OVERHEAD = len(json.dumps({INPUT_NAME: {"b64": ""}}))
MAX_IMAGE_BYTES = (MAX_LINE_BYTES - _LINE_OVERHEAD) // 4 * 3
_MODEL = re.compile(r"^(projects/[^/]+/locations/[^/]+/models/)?[A-Za-z0-9_-]+(@[A-Za-z0-9_-]+)?$")
_MAX_LISTED = 20
# What the exported model's decoder reads (PIL's names for them).
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")


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

    An image larger than :data:`MAX_IMAGE_BYTES`, or a file that is no JPEG/PNG/GIF/BMP/
    WebP, makes an :class:`InstanceError` listing all of them, and nothing is written.
    Beside the output, ``OUTPUT.files.csv`` names each line's file and the SHA-256 of its
    bytes: Vertex echoes every instance next to its prediction, so that hash leads a
    prediction back to its file. Returns those rows.
    """
    rows, problems = [], []
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with open(partial, "w", encoding="ascii", newline="\n") as lines:
        for path in images:
            try:
                data = _read(path)
            except ImageFileError as error:
                problems.append(str(error))
                continue
            if image_format(data) not in IMAGE_FORMATS:
                kind = file_formats.describe(data)
                problems.append(f"{path}: not a {'/'.join(IMAGE_FORMATS)} image ({kind})")
                continue
            row = {"line": len(rows) + 1, "path": str(path), "bytes": len(data)}
            rows.append(row | {"sha256": hashlib.sha256(data).hexdigest()})
            lines.write(instance_line(data) + "\n")
    if problems or not rows:
        partial.unlink()
        raise InstanceError(
            f"{len(problems)} of {len(images)} images cannot be batch prediction instances; "
            "nothing was written:\n" + _listing(problems)
            if problems
            else "no images given"
        )
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


@dataclass(kw_only=True)
class VertexBatchConfig(ModelSource):
    """A batch prediction job.

    ``instances`` are local JSON Lines files (checked, then uploaded under ``bucket``) or
    ``gs://`` URIs (wildcards allowed, as Vertex accepts them). The model is ``model``, a
    Model Registry resource name or id, or a :class:`~serving.vertex.ModelSource` upload.
    """

    KIND = "batch prediction"
    instances: list[str]
    output: str
    model: str | None = None
    job_display_name: str = "keras-vit-batch"
    starting_replica_count: int = 1
    max_replica_count: int | None = None
    batch_size: int = 64
    overwrite: bool = False

    def problems(self) -> list[str]:
        if (self.model is None) == (self.model_dir is None and self.container_image_uri is None):
            problems = VertexConfig.problems(self) + [
                "give the model as --registry-model (a Model Registry resource name or id) or as "
                "--model-dir / --container-image-uri (uploaded first), not both or neither"
            ]
        elif self.model is not None:
            problems = VertexConfig.problems(self)
            if not _MODEL.match(self.model):
                problems.append(
                    f"model {self.model!r} is not projects/P/locations/R/models/ID or an id"
                )
        else:
            problems = super().problems()
        if not self.instances:
            problems.append("give at least one instances file")
        for source in self.instances:
            if source.startswith("gs://"):
                problems += gcs_problem("instances", source)
            elif not Path(source).is_file():
                problems.append(f"instances file {source!r} does not exist")
            elif not _BUCKET.match(self.bucket or ""):
                problems.append(f"a local instances file needs --bucket gs://BUCKET: {source}")
        problems += gcs_problem("output", self.output)
        if self.starting_replica_count < 1:
            problems.append("starting_replica_count must be >= 1")
        if (self.max_replica_count or self.starting_replica_count) < self.starting_replica_count:
            problems.append("max_replica_count is below starting_replica_count")
        if not 1 <= self.batch_size <= 10_000:
            problems.append(f"batch_size must be within 1..10000, got {self.batch_size}")
        return problems

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
    """Checks and uploads the instances, uploads the model if asked, creates the job."""
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
    job = sdk.aiplatform.BatchPredictionJob.create(
        job_display_name=config.job_display_name,
        model_name=model,
        instances_format="jsonl",
        predictions_format="jsonl",
        gcs_source=sources,
        gcs_destination_prefix=config.output,
        starting_replica_count=config.starting_replica_count,
        max_replica_count=config.max_replica_count or config.starting_replica_count,
        batch_size=config.batch_size,
        labels=dict(config.labels),
        **config.machine(),
        sync=True,
    )
    log(f"batch prediction job: {job.resource_name}")
    return job
