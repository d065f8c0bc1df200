"""Deploy an exported keras-vit SavedModel version to a Vertex AI endpoint.

:func:`deploy` makes the calls of ``google-cloud-aiplatform`` in order, on an
:class:`~serving.vertex_sdk.Sdk`: the real SDK, or for ``--dry-run`` a
:class:`~serving.vertex_sdk.RecordingSdk` that checks every call against the SDK's
signatures and records it (no network, no credentials):

1. ``aiplatform.init`` with the project, region and staging bucket;
2. ``Model.upload`` of the local version directory: the SDK stages it under
   ``BUCKET/vertex_ai_auto_staging/<timestamp>`` itself, never replacing an object, and
   the container is Vertex's prebuilt TensorFlow one
   (``aiplatform.helpers.get_prebuilt_prediction_container_uri``) or our own image
   (``container_image_uri``, model baked in, TF Serving's REST routes);
3. reuse the endpoint with the given display name (``Endpoint.list``) or create it;
4. ``Endpoint.deploy`` with machine type, accelerator, replicas and traffic;
5. a smoke-test prediction through :class:`serving.client.VertexClient`;
6. with ``cleanup``: undeploy, delete the endpoint (only if this run created it), the
   model and its staged files. They run after a failure too, so a failed smoke test
   does not leave paid replicas running.

What the SDK lacks and we keep: the validation of every value at once, the bf16
machine-series check, the smoke test and the cleanup.

Example:
    >>> from serving.vertex_sdk import RecordingSdk
    >>> config = VertexDeployConfig(
    ...     project="my-project", region="us-central1", endpoint_name="vit", model_dir=None,
    ...     container_image_uri="us-docker.pkg.dev/my-project/serving/keras-vit-serving:0.1.0")
    >>> sdk = RecordingSdk()
    >>> _ = deploy(config, sdk, log=lambda line: None)
    >>> [call["call"].rsplit(".", 2)[-2:] for call in sdk.calls][:4]
    [['aiplatform', 'init'], ['Model', 'upload'], ['Endpoint', 'list'], ['Endpoint', 'create']]
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.vertex_sdk import Sdk

# Newest TensorFlow version of Vertex AI's prebuilt prediction containers: the Vertex
# docs' "Prebuilt containers for inference" table and google-cloud-aiplatform 2.7.0's
# constants both end at tf2-cpu.2-15 / tf2-gpu.2-15. Our export uses TF 2.21, so the
# prebuilt server is older than the exporter; `container_image_uri` runs our own
# tensorflow/serving:2.21.0 image (serving/docker) instead.
PREBUILT_TF_VERSION = "2.15"
# TF Serving routes of our image when it runs as a Vertex custom container.
MODEL_NAME = "vit"
CUSTOM_CONTAINER_PREDICT_ROUTE = f"/v1/models/{MODEL_NAME}:predict"
CUSTOM_CONTAINER_HEALTH_ROUTE = f"/v1/models/{MODEL_NAME}"
CUSTOM_CONTAINER_PORT = 8501

_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_BUCKET = re.compile(r"^gs://(?P<bucket>[a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(?:/(?P<prefix>.*))?$")
_ACCELERATOR = re.compile(r"^(NVIDIA|TPU)_[A-Z0-9_]+$")
_LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# `--precision bfloat16`: CPU machine series whose processors have hardware bf16, so
# oneDNN runs the bf16 export fast (without it, several times slower than float32; see
# serving/precision.py). N1, N2, N2D, C2, C2D and E2 processors have neither AVX512_BF16
# nor AMX-BF16 (Compute Engine's CPU platforms page lists each series' processors).
BF16_MACHINE_SERIES = {
    "c3": "Intel Sapphire Rapids: AMX-BF16 and AVX512_BF16",
    "c3d": "AMD Genoa (Zen 4): AVX512_BF16",
    "n4": "Intel Emerald Rapids: AMX-BF16 and AVX512_BF16",
    "c4": "Intel Emerald Rapids / Granite Rapids: AMX-BF16 and AVX512_BF16",
    "c4d": "AMD Turin (Zen 5): AVX512_BF16",
}
DEFAULT_MACHINE_TYPES = {"float32": "n1-standard-4", "bfloat16": "c3-standard-4"}
EXPORT_SETTINGS = "assets.extra/keras_vit_export.json"


def export_precision(model_dir: Path | str | None) -> str | None:
    """The precision ``keras-vit export`` wrote ``model_dir`` with; None when unknown.

    Exports from before ``--precision`` have settings without the key: float32.
    """
    if model_dir is None:
        return None
    try:
        settings = json.loads((Path(model_dir) / EXPORT_SETTINGS).read_text())
    except (OSError, ValueError):
        return None
    return settings.get("precision", "float32") if isinstance(settings, dict) else None


def _precision_problems(config: VertexDeployConfig) -> list[str]:
    if config.precision not in (None, *DEFAULT_MACHINE_TYPES):
        return [f"precision must be float32 or bfloat16, got {config.precision!r}"]
    exported = None if config.container_image_uri else export_precision(config.model_dir)
    if config.precision and exported and exported != config.precision:
        return [
            f"model_dir holds a {exported} export but precision is {config.precision}: "
            f"export it with `keras-vit export --precision {config.precision}`"
        ]
    precision = config.precision or exported or "float32"
    series = (config.machine_type or "").split("-", 1)[0]
    if precision == "bfloat16" and not config.accelerator_type:
        if series not in BF16_MACHINE_SERIES:
            choices = ", ".join(f"{s} ({cpu})" for s, cpu in BF16_MACHINE_SERIES.items())
            return [
                f"machine_type {config.machine_type} has no hardware bfloat16 (AVX512_BF16 or "
                "AMX-BF16), where the bfloat16 export runs several times slower than float32: "
                f"use e.g. {DEFAULT_MACHINE_TYPES['bfloat16']} (series with it: {choices}), or "
                "deploy the float32 export"
            ]
    return []


@dataclass
class VertexDeployConfig:
    """What to deploy where. :meth:`validate` explains every bad value at once."""

    project: str
    region: str
    model_dir: Path | str | None
    bucket: str | None = None
    endpoint_name: str | None = None
    endpoint_id: str | None = None
    model_display_name: str = "keras-vit"
    machine_type: str = "n1-standard-4"
    accelerator_type: str | None = None
    accelerator_count: int = 0
    min_replicas: int = 1
    max_replicas: int = 1
    traffic_percentage: int | None = None
    traffic_split: dict[str, int] | None = None
    container_image_uri: str | None = None
    service_account: str | None = None
    labels: dict[str, str] = field(default_factory=lambda: {"app": "keras-vit"})
    predict_images: list[Path | str] = field(default_factory=list)
    cleanup: bool = False
    # float32 / bfloat16 (`keras-vit export --precision`); None: as the export says.
    precision: str | None = None

    def validate(self) -> None:
        problems = []
        if not _PROJECT.match(self.project or ""):
            problems.append(f"project {self.project!r} is not a Google Cloud project id")
        if not _REGION.match(self.region or ""):
            problems.append(f"region {self.region!r} is not a region like us-central1")
        problems += model_source_problems(self)
        if bool(self.endpoint_name) == bool(self.endpoint_id):
            problems.append("give exactly one of endpoint_name (reuse or create) or endpoint_id")
        if not self.model_display_name:
            problems.append("model_display_name must not be empty")
        if not self.machine_type:
            problems.append("machine_type must not be empty")
        if self.accelerator_type:
            if not _ACCELERATOR.match(self.accelerator_type):
                problems.append(
                    f"accelerator_type {self.accelerator_type!r} is not a Vertex accelerator "
                    "name such as NVIDIA_TESLA_T4 or NVIDIA_L4"
                )
            if self.accelerator_count < 1:
                problems.append("accelerator_count must be >= 1 with an accelerator_type")
        elif self.accelerator_count:
            problems.append("accelerator_count needs an accelerator_type")
        if self.min_replicas < 1:
            problems.append(f"min_replicas must be >= 1, got {self.min_replicas}")
        if self.max_replicas < self.min_replicas:
            problems.append(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})"
            )
        problems += _traffic_problems(self.traffic_percentage, self.traffic_split)
        problems += _precision_problems(self)
        for image in self.predict_images:
            if not Path(image).is_file():
                problems.append(f"predict image {str(image)!r} does not exist")
        for key, value in self.labels.items():
            if not _LABEL.match(key) or not re.fullmatch(r"[a-z0-9_-]{0,63}", value):
                problems.append(f"label {key}={value} is not a valid Vertex label")
        if problems:
            raise ValueError("invalid Vertex deployment:\n  - " + "\n  - ".join(problems))

    @property
    def gpu(self) -> bool:
        return bool(self.accelerator_type and self.accelerator_type.startswith("NVIDIA"))


def model_source_problems(config: Any) -> list[str]:
    """What is wrong with a config's model source: a SavedModel version directory and a
    bucket for the prebuilt container, or a pinned image of our own."""
    problems = []
    if config.container_image_uri is None:
        if config.model_dir is None:
            problems.append("model_dir is required with the prebuilt container")
        else:
            model_dir = Path(config.model_dir)
            if not model_dir.is_dir():
                problems.append(f"model_dir {str(model_dir)!r} is not a directory")
            elif not any(
                (model_dir / n).is_file() for n in ("saved_model.pb", "saved_model.pbtxt")
            ):
                problems.append(
                    f"model_dir {str(model_dir)!r} has no saved_model.pb: pass a version "
                    "directory of the export (BASE/1), not its base directory"
                )
        if not _BUCKET.match(config.bucket or ""):
            problems.append(
                f"bucket {config.bucket!r} must look like gs://BUCKET[/PREFIX] (where "
                "Model.upload stages the model files)"
            )
    elif not re.match(
        r"^[\w.-]+(:\d+)?/[\w./-]+(:[\w.-]+|@sha256:[0-9a-f]{64})$", config.container_image_uri
    ):
        problems.append(
            f"container_image_uri {config.container_image_uri!r} must be a pinned image "
            "(REGISTRY/REPO:TAG or @sha256:...)"
        )
    return problems


def _traffic_problems(percentage: int | None, split: dict[str, int] | None) -> list[str]:
    if percentage is not None and split is not None:
        return ["give traffic_percentage or traffic_split, not both"]
    if percentage is not None and not 0 <= percentage <= 100:
        return [f"traffic_percentage must be within 0..100, got {percentage}"]
    if split is not None:
        if any(not isinstance(v, int) or not 0 <= v <= 100 for v in split.values()):
            return [f"traffic_split values must be integers within 0..100, got {split}"]
        if sum(split.values()) != 100:
            return [f"traffic_split must add up to 100, got {sum(split.values())}: {split}"]
        if "0" not in split:
            return ['traffic_split needs the key "0" (the model being deployed)']
    return []


def parse_traffic_split(text: str) -> dict[str, int]:
    """``"0=80,1234567890=20"`` -> ``{"0": 80, "1234567890": 20}``; ``0`` is the new model."""
    split: dict[str, int] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key.strip() or not value.strip().isdigit():
            raise ValueError(
                f"traffic split must look like 0=80,DEPLOYED_MODEL_ID=20, got {text!r}"
            )
        split[key.strip()] = int(value)
    return split


def synthetic_jpeg(size: int = 224) -> bytes:
    """A generated JPEG (colour ramps), the smoke test's image when none is given."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    pixels = np.stack(
        [np.tile(ramp, (size, 1)), np.tile(ramp[:, None], size), np.full((size, size), 128)],
        axis=-1,
    ).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def serving_container_uri(aiplatform: Any, config: Any) -> str:
    """Our image when given, else Vertex's prebuilt TensorFlow container for the region
    (the SDK's own lookup; it raises ValueError for a region without one)."""
    if config.container_image_uri:
        return config.container_image_uri
    return aiplatform.helpers.get_prebuilt_prediction_container_uri(
        framework="tensorflow",
        framework_version=PREBUILT_TF_VERSION,
        region=config.region,
        accelerator="gpu" if config.gpu else "cpu",
    )


def init(aiplatform: Any, config: Any) -> None:
    staging = {"staging_bucket": config.bucket} if config.bucket else {}
    aiplatform.init(project=config.project, location=config.region, **staging)


def upload_model(aiplatform: Any, config: Any) -> Any:
    """``Model.upload`` of ``config.model_dir`` (staged by the SDK) or of our serving image.

    ``config`` is a :class:`VertexDeployConfig` or has its fields (the batch job's does).
    """
    upload: dict[str, Any] = {
        "display_name": config.model_display_name,
        "serving_container_image_uri": serving_container_uri(aiplatform, config),
        "labels": dict(config.labels),
        "sync": True,
    }
    if config.container_image_uri is None:
        # A local directory: Model.upload copies it to the staging bucket itself.
        upload["artifact_uri"] = str(config.model_dir)
    else:
        # Our own TF Serving image, model baked in: tell Vertex its REST routes and port.
        upload |= {
            "serving_container_predict_route": CUSTOM_CONTAINER_PREDICT_ROUTE,
            "serving_container_health_route": CUSTOM_CONTAINER_HEALTH_ROUTE,
            "serving_container_ports": [CUSTOM_CONTAINER_PORT],
        }
    return aiplatform.Model.upload(**upload)


def delete_model(sdk: Sdk, config: Any, model: Any) -> None:
    """Deletes a model this run uploaded, and the files the SDK staged for it."""
    staged = model.uri if config.container_image_uri is None else None
    model.delete(sync=True)
    if staged:
        bucket, _, prefix = staged.removeprefix("gs://").partition("/")
        client = sdk.storage.Client(project=config.project)
        for blob in client.list_blobs(bucket, prefix=prefix.rstrip("/") + "/"):
            blob.delete()


def _endpoint(aiplatform: Any, config: VertexDeployConfig, log) -> tuple[Any, bool]:
    """The endpoint to deploy to, and whether this run created it."""
    if config.endpoint_id:
        return aiplatform.Endpoint(endpoint_name=config.endpoint_id), False
    found = aiplatform.Endpoint.list(
        filter=f'display_name="{config.endpoint_name}"', order_by="create_time desc"
    )
    if found:
        log(f"reusing endpoint {found[0].resource_name}")
        return found[0], False
    endpoint = aiplatform.Endpoint.create(
        display_name=config.endpoint_name, labels=dict(config.labels), sync=True
    )
    log(f"created endpoint {endpoint.resource_name}")
    return endpoint, True


def _deploy_arguments(config: VertexDeployConfig) -> dict[str, Any]:
    deploy: dict[str, Any] = {
        "deployed_model_display_name": config.model_display_name,
        "machine_type": config.machine_type,
        "min_replica_count": config.min_replicas,
        "max_replica_count": config.max_replicas,
    }
    if config.accelerator_type:
        deploy |= {
            "accelerator_type": config.accelerator_type,
            "accelerator_count": config.accelerator_count,
        }
    if config.traffic_split is not None:
        deploy["traffic_split"] = dict(config.traffic_split)
    else:
        deploy["traffic_percentage"] = (
            100 if config.traffic_percentage is None else config.traffic_percentage
        )
    if config.service_account:
        deploy["service_account"] = config.service_account
    return deploy | {"sync": True}


def _deployed_model_id(endpoint: Any, model: Any) -> str:
    """The id Vertex gave our model on the endpoint (``Endpoint.deploy`` returns None)."""
    wanted = model.resource_name.split("@", 1)[0]
    ids = [d.id for d in endpoint.list_models() if d.model.split("@", 1)[0] == wanted]
    if not ids:
        raise RuntimeError(f"{model.resource_name} is not deployed on {endpoint.resource_name}")
    return ids[-1]


@dataclass
class Deployment:
    """What :func:`deploy` made: the model, the endpoint, our model's id on it, and the
    smoke test's predictions."""

    model: Any = None
    endpoint: Any = None
    created_endpoint: bool = False
    deployed_model_id: str | None = None
    predictions: list[Any] = field(default_factory=list)


def deploy(config: VertexDeployConfig, sdk: Sdk, log: Callable[[str], None] = print) -> Deployment:
    """Uploads, deploys and smoke-tests ``config``'s model; see the module docstring."""
    config.validate()
    ai = sdk.aiplatform
    done = Deployment()
    init(ai, config)
    done.model = upload_model(ai, config)
    log(f"model: {done.model.resource_name}")
    try:
        done.endpoint, done.created_endpoint = _endpoint(ai, config, log)
        done.endpoint.deploy(model=done.model, **_deploy_arguments(config))
        done.deployed_model_id = _deployed_model_id(done.endpoint, done.model)
        log(f"deployed model id: {done.deployed_model_id}")
        images = [str(p) for p in config.predict_images] or [synthetic_jpeg()]
        with sdk.vertex_client(
            done.endpoint.resource_name, project=config.project, region=config.region
        ) as client:
            done.predictions = client.predict(images=images)
        for prediction in done.predictions:
            log(f"prediction: {prediction.label} ({prediction.score:.4f})")
    finally:
        if config.cleanup:
            _clean_up(sdk, config, done, log)
    return done


def _clean_up(sdk: Sdk, config: VertexDeployConfig, done: Deployment, log) -> None:
    """Undeploy, delete the endpoint (if created here), the model and its staged files.

    Each step runs even when an earlier one failed; failures are logged, not raised."""
    steps = []
    if done.deployed_model_id is not None:
        steps.append(
            lambda: done.endpoint.undeploy(deployed_model_id=done.deployed_model_id, sync=True)
        )
    if done.created_endpoint:
        steps.append(lambda: done.endpoint.delete(force=False, sync=True))
    steps.append(lambda: delete_model(sdk, config, done.model))
    for step in steps:
        try:
            step()
        except Exception as error:  # noqa: BLE001 - report and go on cleaning
            log(f"cleanup failed: {type(error).__name__}: {error}")


def plan_json(sdk: Any, config: Any) -> str:
    """The dry run's output: every recorded call, with the project and region."""
    return json.dumps(sdk.plan(project=config.project, region=config.region), indent=2)
