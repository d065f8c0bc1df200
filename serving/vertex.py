"""Deploy an exported keras-vit SavedModel version to a Vertex AI endpoint.

:func:`deploy` makes the calls of ``google-cloud-aiplatform`` in order on an
:class:`~serving.vertex_sdk.Sdk`: the real SDK, or for ``--dry-run`` a
:class:`~serving.vertex_sdk.RecordingSdk` that binds every call to the SDK's signatures
and records it. ``Model.upload`` stages the local version directory itself; the
container is Vertex's prebuilt TensorFlow one (``aiplatform.helpers``) or an image of
ours (:data:`CONTAINERS`). The steps are listed in docs/deployment.md, section 4.

What the SDK lacks and we keep: every bad value explained at once, the bf16
machine-series check, the smoke-test prediction, and the cleanup (undeploy, delete the
endpoint if this run created it, the model and its staged files), which also runs
after a failure so that no paid replicas are left behind.

Example:
    >>> from serving.vertex_sdk import RecordingSdk
    >>> config = VertexDeployConfig(
    ...     project="my-project", region="us-central1", endpoint_name="vit",
    ...     container_image_uri="us-docker.pkg.dev/my-project/serving/keras-vit-serving:0.1.0")
    >>> sdk = RecordingSdk()
    >>> _ = deploy(config, sdk, log=lambda line: None)
    >>> [call["call"].rsplit(".", 2)[-2:] for call in sdk.calls][:4]
    [['aiplatform', 'init'], ['Model', 'upload'], ['Endpoint', 'list'], ['Endpoint', 'create']]
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from serving.vertex_sdk import Sdk

# Newest TensorFlow of Vertex's prebuilt prediction containers (the Vertex docs' table and
# google-cloud-aiplatform 2.7's constants end at tf2-cpu.2-15). Our export uses TF 2.21:
# `container_image_uri` runs an image of ours instead.
PREBUILT_TF_VERSION = "2.15"
MODEL_NAME = "vit"
# What Vertex is told about each image of ours (Model.upload's serving_container_*):
# tf-serving: tensorflow/serving with the model baked in (serving/docker/Dockerfile),
# its own REST routes; keras-vit-serve: our server (serving/docker/Dockerfile.keras-vit-serve),
# which answers Vertex's contract (AIP_HTTP_PORT, AIP_PREDICT_ROUTE, AIP_HEALTH_ROUTE).
CONTAINERS = {
    "tf-serving": {
        "predict_route": f"/v1/models/{MODEL_NAME}:predict",
        "health_route": f"/v1/models/{MODEL_NAME}",
        "ports": [8501],
    },
    "keras-vit-serve": {"predict_route": "/predict", "health_route": "/health", "ports": [8501]},
}

_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_BUCKET = re.compile(r"^gs://(?P<bucket>[a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(?:/(?P<prefix>.*))?$")
_ACCELERATOR = re.compile(r"^(NVIDIA|TPU)_[A-Z0-9_]+$")
_LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_PINNED_IMAGE = re.compile(r"^[\w.-]+(:\d+)?/[\w./-]+(:[\w.-]+|@sha256:[0-9a-f]{64})$")
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


def gcs_problem(name: str, value: str | None, what: str = "") -> list[str]:
    """``[why]`` when ``value`` is no ``gs://BUCKET[/PREFIX]``, else ``[]``."""
    if _BUCKET.match(value or ""):
        return []
    return [f"{name} {value!r} must be a gs://BUCKET[/PREFIX] URI{what}"]


def pinned_image_problem(name: str, uri: str | None) -> list[str]:
    if _PINNED_IMAGE.match(uri or ""):
        return []
    return [f"{name} {uri!r} must be a pinned image: REGISTRY/PATH:TAG or @sha256:DIGEST"]


@dataclass(kw_only=True)
class VertexConfig:
    """What every Vertex job has: where, on which machines, as whom, with which labels.

    :meth:`validate` explains every bad value at once (subclasses add theirs)."""

    KIND = "job"
    project: str
    region: str
    bucket: str | None = None
    machine_type: str = "n1-standard-4"
    accelerator_type: str | None = None
    accelerator_count: int = 0
    service_account: str | None = None
    labels: dict[str, str] = field(default_factory=lambda: {"app": "keras-vit"})

    def problems(self) -> list[str]:
        problems = []
        if not _PROJECT.match(self.project or ""):
            problems.append(f"project {self.project!r} is not a Google Cloud project id")
        if not _REGION.match(self.region or ""):
            problems.append(f"region {self.region!r} is not a region like us-central1")
        if not self.machine_type:
            problems.append("machine_type must not be empty")
        if self.accelerator_type and not _ACCELERATOR.match(self.accelerator_type):
            problems.append(
                f"accelerator_type {self.accelerator_type!r} is not a Vertex accelerator name "
                "such as NVIDIA_TESLA_T4 or NVIDIA_L4"
            )
        if bool(self.accelerator_type) != (self.accelerator_count > 0):
            problems.append("give accelerator_type and a positive accelerator_count together")
        for key, value in self.labels.items():
            if not _LABEL.match(key) or not re.fullmatch(r"[a-z0-9_-]{0,63}", value):
                problems.append(f"label {key}={value} is not a valid Vertex label")
        return problems

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"invalid Vertex {self.KIND}:\n  - " + "\n  - ".join(problems))

    def machine(self) -> dict[str, Any]:
        """The machine arguments, as Endpoint.deploy, BatchPredictionJob.create and
        CustomContainerTrainingJob.run all name them."""
        machine: dict[str, Any] = {"machine_type": self.machine_type}
        if self.accelerator_type:
            machine |= {
                "accelerator_type": self.accelerator_type,
                "accelerator_count": self.accelerator_count,
            }
        if self.service_account:
            machine["service_account"] = self.service_account
        return machine

    @property
    def gpu(self) -> bool:
        return bool(self.accelerator_type and self.accelerator_type.startswith("NVIDIA"))


@dataclass(kw_only=True)
class ModelSource(VertexConfig):
    """A model to upload: a SavedModel version directory for the prebuilt container, or
    an image of ours with the model in it (``container`` says which, :data:`CONTAINERS`)."""

    model_dir: Path | str | None = None
    model_display_name: str = "keras-vit"
    container_image_uri: str | None = None
    container: str = "tf-serving"

    def problems(self) -> list[str]:
        problems = super().problems()
        if not self.model_display_name:
            problems.append("model_display_name must not be empty")
        if self.container_image_uri is not None:
            problems += pinned_image_problem("container_image_uri", self.container_image_uri)
            if self.container not in CONTAINERS:
                problems.append(f"container must be one of {', '.join(CONTAINERS)}")
            return problems
        model_dir = Path(self.model_dir) if self.model_dir is not None else None
        if model_dir is None:
            problems.append("model_dir is required with the prebuilt container")
        elif not model_dir.is_dir():
            problems.append(f"model_dir {str(model_dir)!r} is not a directory")
        elif not any((model_dir / n).is_file() for n in ("saved_model.pb", "saved_model.pbtxt")):
            problems.append(
                f"model_dir {str(model_dir)!r} has no saved_model.pb: pass a version "
                "directory of the export (BASE/1), not its base directory"
            )
        return problems + gcs_problem("bucket", self.bucket, " (where Model.upload stages it)")


def export_precision(model_dir: Path | str | None) -> str | None:
    """The precision ``keras-vit export`` wrote ``model_dir`` with (None when unknown;
    exports from before ``--precision`` are float32)."""
    if model_dir is None:
        return None
    try:
        settings = json.loads((Path(model_dir) / EXPORT_SETTINGS).read_text())
    except (OSError, ValueError):
        return None
    return settings.get("precision", "float32") if isinstance(settings, dict) else None


@dataclass(kw_only=True)
class VertexDeployConfig(ModelSource):
    """What to deploy where."""

    KIND = "deployment"
    endpoint_name: str | None = None
    endpoint_id: str | None = None
    min_replicas: int = 1
    max_replicas: int = 1
    traffic_percentage: int | None = None
    traffic_split: dict[str, int] | None = None
    predict_images: list[Path | str] = field(default_factory=list)
    cleanup: bool = False
    # float32 / bfloat16 (`keras-vit export --precision`); None: as the export says.
    precision: str | None = None

    def problems(self) -> list[str]:
        problems = super().problems()
        if bool(self.endpoint_name) == bool(self.endpoint_id):
            problems.append("give exactly one of endpoint_name (reuse or create) or endpoint_id")
        if self.min_replicas < 1:
            problems.append(f"min_replicas must be >= 1, got {self.min_replicas}")
        if self.max_replicas < self.min_replicas:
            problems.append(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})"
            )
        problems += _traffic_problems(self.traffic_percentage, self.traffic_split)
        for image in self.predict_images:
            if not Path(image).is_file():
                problems.append(f"predict image {str(image)!r} does not exist")
        return problems + self._precision_problems()

    def _precision_problems(self) -> list[str]:
        if self.precision not in (None, *DEFAULT_MACHINE_TYPES):
            return [f"precision must be float32 or bfloat16, got {self.precision!r}"]
        exported = None if self.container_image_uri else export_precision(self.model_dir)
        if exported not in (None, *DEFAULT_MACHINE_TYPES):
            return [
                f"model_dir holds a {exported} export, which TF Serving cannot load: bake it "
                "into our server's image (make image-serve) and pass --container-image-uri "
                "with --container keras-vit-serve"
            ]
        if self.precision and exported and exported != self.precision:
            return [
                f"model_dir holds a {exported} export but precision is {self.precision}: "
                f"export it with `keras-vit export --precision {self.precision}`"
            ]
        series = (self.machine_type or "").split("-", 1)[0]
        bf16 = (self.precision or exported) == "bfloat16"
        if bf16 and not self.accelerator_type and series not in BF16_MACHINE_SERIES:
            choices = ", ".join(f"{s} ({cpu})" for s, cpu in BF16_MACHINE_SERIES.items())
            return [
                f"machine_type {self.machine_type} has no hardware bfloat16 (AVX512_BF16 or "
                "AMX-BF16), where the bfloat16 export runs several times slower than float32: "
                f"use e.g. {DEFAULT_MACHINE_TYPES['bfloat16']} (series with it: {choices}), or "
                "deploy the float32 export"
            ]
        return []


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


def synthetic_jpeg() -> bytes:
    """A generated JPEG (PIL's 256 x 256 gradient), the smoke test's image when none is given."""

    buffer = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def init(aiplatform: Any, config: VertexConfig) -> None:
    staging = {"staging_bucket": config.bucket} if config.bucket else {}
    aiplatform.init(project=config.project, location=config.region, **staging)


def upload_model(aiplatform: Any, config: ModelSource) -> Any:
    """``Model.upload`` of ``config.model_dir`` (staged by the SDK) or of an image of ours."""
    upload: dict[str, Any] = {"display_name": config.model_display_name}
    if config.container_image_uri is None:
        upload["serving_container_image_uri"] = (
            aiplatform.helpers.get_prebuilt_prediction_container_uri(
                framework="tensorflow",
                framework_version=PREBUILT_TF_VERSION,
                region=config.region,
                accelerator="gpu" if config.gpu else "cpu",
            )
        )
        upload["artifact_uri"] = str(config.model_dir)  # local: the SDK stages it
    else:
        upload["serving_container_image_uri"] = config.container_image_uri
        container = CONTAINERS[config.container]
        upload |= {f"serving_container_{key}": value for key, value in container.items()}
    return aiplatform.Model.upload(**upload, labels=dict(config.labels), sync=True)


def delete_model(sdk: Sdk, config: ModelSource, model: Any) -> None:
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


def _traffic(config: VertexDeployConfig) -> dict[str, Any]:
    if config.traffic_split is not None:
        return {"traffic_split": dict(config.traffic_split)}
    percentage = config.traffic_percentage
    return {"traffic_percentage": 100 if percentage is None else percentage}


def _deployed_model_id(endpoint: Any, model: Any) -> str:
    """The id Vertex gave our model on the endpoint (``Endpoint.deploy`` returns None)."""
    wanted = model.resource_name.split("@", 1)[0]
    ids = [d.id for d in endpoint.list_models() if d.model.split("@", 1)[0] == wanted]
    if not ids:
        raise RuntimeError(f"{model.resource_name} is not deployed on {endpoint.resource_name}")
    return ids[-1]


@dataclass
class Deployment:
    """What :func:`deploy` made, and the smoke test's predictions."""

    model: Any = None
    endpoint: Any = None
    created_endpoint: bool = False
    deployed_model_id: str | None = None
    predictions: list[Any] = field(default_factory=list)


def deploy(config: VertexDeployConfig, sdk: Sdk, log: Callable[[str], None] = print) -> Deployment:
    """Uploads, deploys and smoke-tests ``config``'s model; see the module docstring.

    With ``config.cleanup``, what was made is removed in reverse order (undeploy, the
    endpoint if this run created it, the model and its staged files), after a failure
    too; a step that fails is logged and the others still run."""
    config.validate()
    ai = sdk.aiplatform
    done = Deployment()

    def clean_up(step: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if config.cleanup:
            cleanups.callback(_logged, log, step, *args, **kwargs)

    init(ai, config)
    with contextlib.ExitStack() as cleanups:
        done.model = upload_model(ai, config)
        log(f"model: {done.model.resource_name}")
        clean_up(delete_model, sdk, config, done.model)
        done.endpoint, done.created_endpoint = _endpoint(ai, config, log)
        if done.created_endpoint:
            clean_up(done.endpoint.delete, force=False, sync=True)
        done.endpoint.deploy(
            model=done.model,
            deployed_model_display_name=config.model_display_name,
            min_replica_count=config.min_replicas,
            max_replica_count=config.max_replicas,
            **config.machine(),
            **_traffic(config),
            sync=True,
        )
        done.deployed_model_id = _deployed_model_id(done.endpoint, done.model)
        log(f"deployed model id: {done.deployed_model_id}")
        clean_up(done.endpoint.undeploy, deployed_model_id=done.deployed_model_id, sync=True)
        images = [str(p) for p in config.predict_images] or [synthetic_jpeg()]
        with sdk.vertex_client(
            done.endpoint.resource_name, project=config.project, region=config.region
        ) as client:
            done.predictions = client.predict(images=images)
        for prediction in done.predictions:
            log(f"prediction: {prediction.label} ({prediction.score:.4f})")
    return done


def _logged(log: Callable[[str], None], step: Callable[..., Any], *args, **kwargs) -> None:
    try:
        step(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - report and go on cleaning
        log(f"cleanup failed: {type(error).__name__}: {error}")
