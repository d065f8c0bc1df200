"""The Vertex AI SDK as the ``keras-vit deploy vertex`` commands use it: the real one, or a
recording stand-in for ``--dry-run``.

:func:`real_sdk` imports ``google-cloud-aiplatform`` (the ``vertex`` extra).
:class:`RecordingSdk` offers the same classes, made by :func:`unittest.mock.create_autospec`
from the SDK's own: every call is bound to the SDK's real signature (an argument it does
not take raises ``TypeError``) and recorded. The objects calls return are named
(``${model}``, ``${endpoint}``), so that later calls that use them say so. The deploy,
batch prediction and training code runs unchanged against either, so a dry run prints
exactly the calls a real run makes, in order, and touches no network or credentials.

Example:
    >>> sdk = RecordingSdk()
    >>> sdk.aiplatform.init(project="my-project", location="us-central1")
    >>> model = sdk.aiplatform.Model.upload(display_name="vit", artifact_uri="models/vit/1")
    >>> model.delete(sync=True)
    >>> [(c["call"], c.get("target")) for c in sdk.calls]  # doctest: +NORMALIZE_WHITESPACE
    [('google.cloud.aiplatform.init', None), ('google.cloud.aiplatform.Model.upload', None),
     ('google.cloud.aiplatform.Model.delete', '${model}')]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

AIPLATFORM = "google.cloud.aiplatform"
STORAGE = "google.cloud.storage"


@dataclass
class Sdk:
    """What the Vertex code calls: ``google.cloud.aiplatform``, ``google.cloud.storage`` and
    our :class:`serving.client.VertexClient` (for the smoke-test prediction)."""

    aiplatform: Any
    storage: Any
    vertex_client: Any


def real_sdk() -> Sdk:
    """The installed SDK; a clear error when the ``vertex`` extra is missing."""
    try:
        from google.cloud import aiplatform, storage
    except ImportError as error:
        raise RuntimeError(
            "the Vertex AI commands need google-cloud-aiplatform: "
            "pip install 'keras-vit[vertex]' (google-cloud-aiplatform>=2.7)"
        ) from error
    from serving.client import VertexClient

    return Sdk(aiplatform, storage, VertexClient)


class RecordingSdk(Sdk):
    """A dry-run :class:`Sdk`: autospecced SDK classes that record every call.

    ``existing_endpoint``: what ``Endpoint.list`` finds (default none, so the plan shows
    the endpoint being created).
    """

    def __init__(self, existing_endpoint: bool = False) -> None:
        real = real_sdk()
        ai, storage = real.aiplatform, real.storage
        self.calls: list[dict[str, Any]] = []
        self._labels: dict[int, str] = {}
        endpoint = self._instance(ai.Endpoint, f"{AIPLATFORM}.Endpoint", "endpoint")
        model = self._instance(ai.Model, f"{AIPLATFORM}.Model", "model")
        # Where Model.upload staged the local model (under init's staging bucket).
        model.uri = "gs://${staging_bucket}/vertex_ai_auto_staging/${timestamp}"
        endpoint.list_models.side_effect = self._recorder(
            f"{AIPLATFORM}.Endpoint.list_models",
            "${endpoint}",
            lambda: [SimpleNamespace(id="${deployed_model_id}", model=model.resource_name)],
        )
        job = self._instance(ai.BatchPredictionJob, f"{AIPLATFORM}.BatchPredictionJob", "job")
        training = self._instance(
            ai.CustomContainerTrainingJob, f"{AIPLATFORM}.CustomContainerTrainingJob", "job"
        )
        self.aiplatform = SimpleNamespace(
            init=self._function(ai.init, f"{AIPLATFORM}.init"),
            helpers=ai.helpers,  # pure functions (container URIs): the real ones
            Model=self._class(ai.Model, f"{AIPLATFORM}.Model", model, upload=model),
            Endpoint=self._class(
                ai.Endpoint,
                f"{AIPLATFORM}.Endpoint",
                endpoint,
                list=[endpoint] if existing_endpoint else [],
                create=endpoint,
            ),
            BatchPredictionJob=self._class(
                ai.BatchPredictionJob, f"{AIPLATFORM}.BatchPredictionJob", job, create=job
            ),
            CustomContainerTrainingJob=self._class(
                ai.CustomContainerTrainingJob,
                f"{AIPLATFORM}.CustomContainerTrainingJob",
                training,
            ),
        )
        blob = self._instance(storage.Blob, f"{STORAGE}.Blob", "blob")
        client = self._instance(storage.Client, f"{STORAGE}.Client", "storage_client")
        client.bucket.side_effect = self._recorder(f"{STORAGE}.Client.bucket", "${storage_client}")
        client.list_blobs.side_effect = self._recorder(
            f"{STORAGE}.Client.list_blobs", "${storage_client}", lambda: []
        )
        self.storage = SimpleNamespace(
            Client=self._class(storage.Client, f"{STORAGE}.Client", client),
            Blob=self._class(storage.Blob, f"{STORAGE}.Blob", blob, from_string=blob),
        )
        from serving.client import VertexClient

        vertex = self._instance(VertexClient, "serving.client.VertexClient", "vertex_client")
        vertex.__enter__.return_value = vertex
        vertex.predict.side_effect = self._recorder(
            "serving.client.VertexClient.predict", "${vertex_client}", lambda: []
        )
        self.vertex_client = self._class(VertexClient, "serving.client.VertexClient", vertex)

    # ------------------------------------------------------------------ building

    def _recorder(self, call: str, target: str | None, result: Any = None) -> Callable[..., Any]:
        def record(*args, **kwargs):
            entry: dict[str, Any] = {"call": call}
            if target:
                entry["target"] = target
            if args:
                entry["args"] = list(args)
            entry["kwargs"] = kwargs
            self.calls.append(entry)
            return result() if callable(result) else result

        return record

    def _function(self, function: Callable[..., Any], call: str) -> Any:
        fake = mock.create_autospec(function)
        fake.side_effect = self._recorder(call, None)
        return fake

    def _instance(self, cls: type, qualname: str, name: str) -> Any:
        """An autospecced instance whose public methods record calls on ``${name}``."""
        instance = mock.create_autospec(cls, instance=True)
        self._labels[id(instance)] = f"${{{name}}}"
        instance.resource_name = f"${{{name}.resource_name}}"
        for attribute in _public_methods(cls):
            getattr(instance, attribute).side_effect = self._recorder(
                f"{qualname}.{attribute}", f"${{{name}}}"
            )
        return instance

    def _class(self, cls: type, qualname: str, instance: Any, **results: Any) -> Any:
        """An autospecced class: constructing it gives ``instance``; its class and static
        methods record calls and return ``results[name]`` (None when absent)."""
        fake = mock.create_autospec(cls)
        fake.side_effect = self._recorder(qualname, None, lambda: instance)
        for attribute in _public_methods(cls, static=True):
            result = results.get(attribute)
            getattr(fake, attribute).side_effect = self._recorder(
                f"{qualname}.{attribute}", None, (lambda value=result: value)
            )
        return fake

    # ------------------------------------------------------------------ output

    def jsonable(self, value: Any) -> Any:
        """Calls' arguments as JSON: recorded objects by name, bytes by their length."""
        if id(value) in self._labels:
            return self._labels[id(value)]
        if isinstance(value, dict):
            return {str(k): self.jsonable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.jsonable(v) for v in value]
        if isinstance(value, (bytes, bytearray)):
            return f"<{len(value)} bytes>"
        if isinstance(value, Path):
            return str(value)
        return value

    def plan(self, **header: Any) -> dict[str, Any]:
        """``{"dry_run": true, **header, "calls": [...]}``, every call in order."""
        calls = [{k: self.jsonable(v) for k, v in entry.items()} for entry in self.calls]
        return {"dry_run": True, **header, "calls": calls}


def _public_methods(cls: type, static: bool = False) -> list[str]:
    """Public callables of ``cls``: instance methods, or class/static methods."""
    names = []
    for name in dir(cls):
        if name.startswith("_"):
            continue
        raw = inspect.getattr_static(cls, name, None)
        is_static = isinstance(raw, (classmethod, staticmethod))
        if is_static == static and (is_static or inspect.isfunction(raw)):
            names.append(name)
    return names
