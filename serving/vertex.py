"""Deploy an exported keras-vit SavedModel version to a Vertex AI endpoint.

The deployment is a *plan*: a list of :class:`Step`, each one SDK call with the exact
keyword arguments it will receive. :func:`build_plan` makes it without any network
access or credentials (that is ``keras-vit deploy vertex --dry-run``), and
:func:`execute` runs it with ``google-cloud-aiplatform`` / ``google-cloud-storage``,
imported only then:

1. ``aiplatform.init`` with the project, region and staging bucket;
2. upload the SavedModel version directory to Cloud Storage, one object per file;
3. ``aiplatform.Model.upload`` with Vertex's prebuilt TensorFlow serving container
   (or our own TF Serving image, ``container_image_uri``);
4. reuse the endpoint with the given display name (``Endpoint.list``) or create it;
5. ``Endpoint.deploy`` with machine type, accelerator, replicas and traffic;
6. predict through :class:`serving.client.VertexClient`;
7. with ``cleanup``: undeploy, delete the endpoint (only if this run created it), the
   model and the uploaded objects. A failure after the deployment still runs these, so
   a failed smoke test does not leave paid replicas running.

Example:
    >>> config = VertexDeployConfig(
    ...     project="my-project", region="us-central1", bucket="gs://my-bucket/models",
    ...     endpoint_name="vit", model_dir=None, container_image_uri="us-docker.pkg.dev/"
    ...     "my-project/serving/keras-vit-serving:0.1.0")
    >>> [step.call for step in build_plan(config)][:3]  # doctest: +NORMALIZE_WHITESPACE
    ['google.cloud.aiplatform.init', 'google.cloud.aiplatform.Model.upload',
     'google.cloud.aiplatform.Endpoint.list']
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
# Artifact Registry multi-regions holding the prebuilt containers, by region prefix.
_CONTAINER_MULTI_REGION = {
    "us": "us",
    "northamerica": "us",
    "southamerica": "us",
    "europe": "europe",
    "me": "europe",
    "africa": "europe",
    "asia": "asia",
    "australia": "asia",
}

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


def prebuilt_container_uri(
    region: str, gpu: bool = False, tf_version: str = PREBUILT_TF_VERSION
) -> str:
    """URI of Vertex AI's prebuilt TensorFlow serving container nearest to ``region``.

    The images exist only with the ``latest`` tag (Vertex rejects others), e.g.
    ``us-docker.pkg.dev/vertex-ai/prediction/tf2-gpu.2-15:latest``.
    """
    if not re.fullmatch(r"2\.\d+", tf_version):
        raise ValueError(f"tf_version must look like 2.15, got {tf_version!r}")
    prefix = region.split("-", 1)[0]
    if prefix not in _CONTAINER_MULTI_REGION:
        raise ValueError(f"no prebuilt-container repository for region {region!r}")
    device = "gpu" if gpu else "cpu"
    version = tf_version.replace(".", "-")
    return (
        f"{_CONTAINER_MULTI_REGION[prefix]}-docker.pkg.dev/vertex-ai/prediction/"
        f"tf2-{device}.{version}:latest"
    )


@dataclass(frozen=True)
class Ref:
    """A value that an earlier step produces: ``Ref("endpoint", "resource_name")``."""

    name: str
    attribute: str = ""

    def __str__(self) -> str:
        return f"${{{self.name}{'.' + self.attribute if self.attribute else ''}}}"


@dataclass(frozen=True)
class SyntheticImage:
    """A generated JPEG, sent when no smoke-test image is given."""

    size: int = 224

    def __str__(self) -> str:
        return f"<synthetic {self.size}x{self.size} JPEG>"

    def encode(self) -> bytes:
        import numpy as np
        from PIL import Image

        ramp = np.linspace(0, 255, self.size, dtype=np.uint8)
        pixels = np.stack(
            [
                np.tile(ramp, (self.size, 1)),
                np.tile(ramp[:, None], self.size),
                np.full((self.size, self.size), 128, np.uint8),
            ],
            axis=-1,
        )
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()


@dataclass
class Step:
    """One SDK call of the plan.

    ``call`` is the fully qualified API (``google.cloud.aiplatform.Model.upload``),
    ``kwargs`` exactly the keyword arguments it receives, ``target`` the object a method
    is called on (a ``gs://`` object or a :class:`Ref`), ``produces`` the name later
    steps use to refer to its result, and ``condition`` when it only runs sometimes.
    """

    name: str
    call: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    target: str | Ref | None = None
    produces: str | None = None
    condition: str | None = None
    cleanup: bool = False

    def to_dict(self) -> dict[str, Any]:
        step: dict[str, Any] = {
            "step": self.name,
            "call": self.call,
            "kwargs": _jsonable(self.kwargs),
        }
        for key in ("target", "produces", "condition"):
            value = getattr(self, key)
            if value is not None:
                step[key] = _jsonable(value)
        if self.cleanup:
            step["cleanup"] = True
        return step


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (Ref, SyntheticImage, Path)):
        return str(value)
    return value


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
    overwrite: bool = False
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

    def serving_container_uri(self) -> str:
        return self.container_image_uri or prebuilt_container_uri(self.region, gpu=self.gpu)

    def artifact_uri(self) -> str | None:
        """``gs://BUCKET/PREFIX/<display name>/<version>``: the SavedModel version directory
        (the prebuilt container wants saved_model.pb directly under the artifact URI)."""
        if self.container_image_uri is not None or self.model_dir is None:
            return None
        match = _BUCKET.match(self.bucket or "")
        assert match, "validate() first"
        prefix = (match["prefix"] or "").strip("/")
        parts = [p for p in (prefix, self.model_display_name, Path(self.model_dir).name) if p]
        return f"gs://{match['bucket']}/" + "/".join(parts)


def model_source_problems(config: Any) -> list[str]:
    """What is wrong with a config's model source: a SavedModel version directory and a
    bucket for the prebuilt container, or a pinned image of our own."""
    problems = []
    if config.container_image_uri is None:
        if _REGION.match(config.region or ""):
            try:
                prebuilt_container_uri(config.region)
            except ValueError as error:
                problems.append(str(error))
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
            problems.append(f"bucket {config.bucket!r} must look like gs://BUCKET[/PREFIX]")
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


def _model_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.rglob("*") if p.is_file())


def upload_step(name: str, path: str | Path, destination: str, overwrite: bool) -> Step:
    """A ``Blob.upload_from_filename`` step; without ``overwrite`` it never replaces an object
    (``if_generation_match=0``: another model's files or another job's input stay)."""
    kwargs: dict[str, Any] = {"filename": str(path)}
    if not overwrite:
        kwargs["if_generation_match"] = 0
    return Step(name, "google.cloud.storage.Blob.upload_from_filename", kwargs, target=destination)


def model_upload_steps(config: Any) -> tuple[list[Step], list[str]]:
    """The steps that put the SavedModel in Vertex's Model Registry, and the uploaded URIs.

    Every file of ``config.model_dir`` to ``config.artifact_uri()`` (none with our own
    serving image, which holds the model), then ``Model.upload``, producing ``model``.
    ``config`` is a :class:`VertexDeployConfig` or has its fields and methods (the batch
    prediction job's config does).
    """
    artifact_uri = config.artifact_uri()
    plan: list[Step] = []
    uploaded: list[str] = []
    if artifact_uri is not None:
        model_dir = Path(config.model_dir)  # type: ignore[arg-type]
        for path in _model_files(model_dir):
            destination = f"{artifact_uri}/{path.relative_to(model_dir).as_posix()}"
            uploaded.append(destination)
            plan.append(upload_step("upload_artifact", path, destination, config.overwrite))

    upload: dict[str, Any] = {
        "display_name": config.model_display_name,
        "serving_container_image_uri": config.serving_container_uri(),
        "labels": dict(config.labels),
        "sync": True,
    }
    if artifact_uri is not None:
        upload["artifact_uri"] = artifact_uri
    else:
        # Our own TF Serving image, model baked in: tell Vertex its REST routes and port.
        upload |= {
            "serving_container_predict_route": CUSTOM_CONTAINER_PREDICT_ROUTE,
            "serving_container_health_route": CUSTOM_CONTAINER_HEALTH_ROUTE,
            "serving_container_ports": [CUSTOM_CONTAINER_PORT],
        }
    plan.append(
        Step("upload_model", "google.cloud.aiplatform.Model.upload", upload, produces="model")
    )
    return plan, uploaded


def build_plan(config: VertexDeployConfig) -> list[Step]:
    """Every SDK call the deployment makes, in order. Makes no network call."""
    config.validate()
    plan = [
        Step(
            "init",
            "google.cloud.aiplatform.init",
            {"project": config.project, "location": config.region}
            | ({"staging_bucket": config.bucket} if config.bucket else {}),
        )
    ]
    upload_steps, uploaded = model_upload_steps(config)
    plan += upload_steps

    if config.endpoint_id:
        plan.append(
            Step(
                "get_endpoint",
                "google.cloud.aiplatform.Endpoint",
                {"endpoint_name": config.endpoint_id},
                produces="endpoint",
            )
        )
    else:
        plan.append(
            Step(
                "find_endpoint",
                "google.cloud.aiplatform.Endpoint.list",
                {
                    "filter": f'display_name="{config.endpoint_name}"',
                    "order_by": "create_time desc",
                },
                produces="endpoint",
                condition="reuses the newest endpoint with this display name",
            )
        )
        plan.append(
            Step(
                "create_endpoint",
                "google.cloud.aiplatform.Endpoint.create",
                {"display_name": config.endpoint_name, "labels": dict(config.labels), "sync": True},
                produces="endpoint",
                condition="only when find_endpoint found none",
            )
        )

    deploy: dict[str, Any] = {
        "model": Ref("model"),
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
    deploy["sync"] = True
    plan.append(
        Step(
            "deploy",
            "google.cloud.aiplatform.Endpoint.deploy",
            deploy,
            target=Ref("endpoint"),
            produces="deployed_model_id",
        )
    )

    images = [str(p) for p in config.predict_images] or [SyntheticImage()]
    plan.append(
        Step(
            "predict",
            "serving.client.VertexClient.predict",
            {"images": images},
            target=Ref("endpoint", "resource_name"),
            produces="predictions",
        )
    )

    if config.cleanup:
        plan.append(
            Step(
                "undeploy",
                "google.cloud.aiplatform.Endpoint.undeploy",
                {"deployed_model_id": Ref("deployed_model_id"), "sync": True},
                target=Ref("endpoint"),
                cleanup=True,
            )
        )
        if not config.endpoint_id:
            plan.append(
                Step(
                    "delete_endpoint",
                    "google.cloud.aiplatform.Endpoint.delete",
                    {"force": False, "sync": True},
                    target=Ref("endpoint"),
                    condition="only when create_endpoint created it",
                    cleanup=True,
                )
            )
        plan.append(
            Step(
                "delete_model",
                "google.cloud.aiplatform.Model.delete",
                {"sync": True},
                target=Ref("model"),
                cleanup=True,
            )
        )
        plan += [
            Step(
                "delete_artifact", "google.cloud.storage.Blob.delete", {}, target=uri, cleanup=True
            )
            for uri in uploaded
        ]
    return plan


def plan_to_json(plan: list[Step], config: VertexDeployConfig) -> str:
    return json.dumps(
        {
            "dry_run": True,
            "project": config.project,
            "region": config.region,
            "steps": [step.to_dict() for step in plan],
        },
        indent=2,
    )


class _Runner:
    """Executes a plan's steps against the SDK modules (injected for tests)."""

    def __init__(self, config, aiplatform, storage, vertex_client, log):
        self.config = config
        self.aiplatform = aiplatform
        self.storage = storage
        self.vertex_client = vertex_client
        self.log = log
        self.values: dict[str, Any] = {}
        self.created_endpoint = False
        self._storage_client = None

    def resolve(self, value: Any) -> Any:
        if isinstance(value, Ref):
            if value.name not in self.values:
                raise RuntimeError(f"{value} is not available: its step did not run")
            result = self.values[value.name]
            return getattr(result, value.attribute) if value.attribute else result
        if isinstance(value, SyntheticImage):
            return value.encode()
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    def blob(self, uri: str):
        match = _BUCKET.match(uri)
        assert match and match["prefix"], uri
        if self._storage_client is None:
            self._storage_client = self.storage.Client(project=self.config.project)
        return self._storage_client.bucket(match["bucket"]).blob(match["prefix"])

    def run(self, step: Step) -> None:
        kwargs = self.resolve(step.kwargs)
        target = self.resolve(step.target) if isinstance(step.target, Ref) else step.target
        ai = self.aiplatform
        if step.call == "google.cloud.aiplatform.init":
            ai.init(**kwargs)
        elif step.call == "google.cloud.storage.Blob.upload_from_filename":
            self.blob(target).upload_from_filename(**kwargs)
        elif step.call == "google.cloud.storage.Blob.delete":
            self.blob(target).delete(**kwargs)
        elif step.call == "google.cloud.aiplatform.Model.upload":
            self.values["model"] = ai.Model.upload(**kwargs)
            self.log(f"model: {self.values['model'].resource_name}")
        elif step.call == "google.cloud.aiplatform.Endpoint":
            self.values["endpoint"] = ai.Endpoint(**kwargs)
        elif step.call == "google.cloud.aiplatform.Endpoint.list":
            found = ai.Endpoint.list(**kwargs)
            if found:
                self.values["endpoint"] = found[0]
                self.log(f"reusing endpoint {found[0].resource_name}")
        elif step.call == "google.cloud.aiplatform.Endpoint.create":
            if "endpoint" not in self.values:
                self.values["endpoint"] = ai.Endpoint.create(**kwargs)
                self.created_endpoint = True
                self.log(f"created endpoint {self.values['endpoint'].resource_name}")
        elif step.call == "google.cloud.aiplatform.Endpoint.deploy":
            target.deploy(**kwargs)
            self.values["deployed_model_id"] = _deployed_model_id(target, self.values["model"])
            self.log(f"deployed model id: {self.values['deployed_model_id']}")
        elif step.call == "serving.client.VertexClient.predict":
            with self.vertex_client(
                target, project=self.config.project, region=self.config.region
            ) as client:
                predictions = client.predict(**kwargs)
            self.values["predictions"] = predictions
            for prediction in predictions:
                self.log(f"prediction: {prediction.label} ({prediction.score:.4f})")
        elif step.call == "google.cloud.aiplatform.Endpoint.undeploy":
            target.undeploy(**kwargs)
        elif step.call == "google.cloud.aiplatform.Endpoint.delete":
            if self.created_endpoint:
                target.delete(**kwargs)
        elif step.call == "google.cloud.aiplatform.Model.delete":
            target.delete(**kwargs)
        else:
            raise ValueError(f"unknown plan call {step.call}")


def _deployed_model_id(endpoint: Any, model: Any) -> str:
    """The id Vertex gave our model on the endpoint (``Endpoint.deploy`` returns None)."""
    wanted = model.resource_name.split("@", 1)[0]
    ids = [d.id for d in endpoint.list_models() if d.model.split("@", 1)[0] == wanted]
    if not ids:
        raise RuntimeError(f"{model.resource_name} is not deployed on {endpoint.resource_name}")
    return ids[-1]


def execute(
    plan: list[Step],
    config: VertexDeployConfig,
    *,
    aiplatform: Any = None,
    storage: Any = None,
    vertex_client: Callable[..., Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs the plan; returns the values its steps produced (model, endpoint, ...).

    The SDK modules are imported here unless given (tests pass autospecced fakes).
    """
    if aiplatform is None:
        try:
            from google.cloud import aiplatform
        except ImportError as error:
            raise RuntimeError(
                "Vertex deployment needs google-cloud-aiplatform: "
                "pip install 'google-cloud-aiplatform>=2.7'"
            ) from error
    if storage is None and any(s.call.startswith("google.cloud.storage") for s in plan):
        from google.cloud import storage
    if vertex_client is None:
        from serving.client import VertexClient as vertex_client

    runner = _Runner(config, aiplatform, storage, vertex_client, log)
    done = 0
    try:
        for done, step in enumerate(plan, start=1):
            log(f"[{done}/{len(plan)}] {step.call}" + (f" {step.target}" if step.target else ""))
            runner.run(step)
    except Exception:
        # Never leave paid replicas or half a deployment behind a failure.
        for step in plan[done:]:
            if not step.cleanup:
                continue
            try:
                runner.run(step)
            except Exception as cleanup_error:  # noqa: BLE001 - report and go on cleaning
                log(f"cleanup step {step.name} failed: {cleanup_error}")
        raise
    return runner.values
