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
import json
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from unittest import mock

from serving.client import VertexClient

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
        model = self._instance(ai.Model, AIPLATFORM, "model")
        # Where Model.upload staged the local model (under init's staging bucket).
        model.uri = "gs://${staging_bucket}/vertex_ai_auto_staging/${timestamp}"
        deployed = [SimpleNamespace(id="${deployed_model_id}", model=model.resource_name)]
        endpoint = self._instance(ai.Endpoint, AIPLATFORM, "endpoint", list_models=deployed)
        job = self._instance(ai.BatchPredictionJob, AIPLATFORM, "job")
        training = self._instance(ai.CustomContainerTrainingJob, AIPLATFORM, "job")
        self.aiplatform = SimpleNamespace(
            init=mock.create_autospec(ai.init, side_effect=self._recorder(f"{AIPLATFORM}.init")),
            helpers=ai.helpers,  # pure functions (container URIs): the real ones
            Model=self._class(ai.Model, AIPLATFORM, model, upload=model),
            Endpoint=self._class(
                ai.Endpoint,
                AIPLATFORM,
                endpoint,
                list=[endpoint] if existing_endpoint else [],
                create=endpoint,
            ),
            BatchPredictionJob=self._class(ai.BatchPredictionJob, AIPLATFORM, job, create=job),
            CustomContainerTrainingJob=self._class(
                ai.CustomContainerTrainingJob, AIPLATFORM, training
            ),
        )
        client = self._instance(storage.Client, STORAGE, "storage_client", list_blobs=[])
        blob = self._instance(storage.Blob, STORAGE, "blob")
        self.storage = SimpleNamespace(
            Client=self._class(storage.Client, STORAGE, client),
            Blob=self._class(storage.Blob, STORAGE, blob, from_string=blob),
        )
        vertex = self._instance(VertexClient, "serving.client", "vertex_client", predict=[])
        vertex.__enter__.return_value = vertex
        self.vertex_client = self._class(VertexClient, "serving.client", vertex)

    # ------------------------------------------------------------------ building

    def _recorder(self, call: str, target: str | None = None, result: Any = None):
        def record(*args, **kwargs):
            entry: dict[str, Any] = {"call": call}
            if target:
                entry["target"] = target
            if args:
                entry["args"] = list(args)
            entry["kwargs"] = kwargs
            self.calls.append(entry)
            return result

        return record

    def _instance(self, cls: type, module: str, name: str, **results: Any) -> Any:
        """An autospecced instance whose public methods record calls on ``${name}`` and
        return ``results[method]`` (None when absent)."""
        instance = mock.create_autospec(cls, instance=True)
        self._labels[id(instance)] = f"${{{name}}}"
        instance.resource_name = f"${{{name}.resource_name}}"
        for method in _public_methods(cls):
            getattr(instance, method).side_effect = self._recorder(
                f"{module}.{cls.__name__}.{method}", f"${{{name}}}", results.get(method)
            )
        return instance

    def _class(self, cls: type, module: str, instance: Any, **results: Any) -> Any:
        """An autospecced class: constructing it gives ``instance``; its class and static
        methods record calls and return ``results[method]`` (None when absent)."""
        fake = mock.create_autospec(cls)
        fake.side_effect = self._recorder(f"{module}.{cls.__name__}", None, instance)
        for method in _public_methods(cls, static=True):
            getattr(fake, method).side_effect = self._recorder(
                f"{module}.{cls.__name__}.{method}", None, results.get(method)
            )
        return fake

    # ------------------------------------------------------------------ output

    def plan_json(self, **header: Any) -> str:
        """``{"dry_run": true, **header, "calls": [...]}`` as JSON, every call in order;
        recorded objects by name, bytes by their length."""

        def named(value: Any) -> str:
            if isinstance(value, (bytes, bytearray)):
                return f"<{len(value)} bytes>"
            return self._labels.get(id(value), str(value))

        plan = {"dry_run": True, **header, "calls": self.calls}
        return json.dumps(plan, indent=2, default=named)


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


def run_on_sdk(command: str, config, function, dry_run: bool, **kwargs):
    """Validates ``config``, then runs ``function(config, sdk, ...)`` on the SDK, or on the
    recording SDK with ``dry_run`` (then prints its calls as JSON).

    Returns ``(exit code, result)``: 2 for a bad configuration, 1 for a failure of the run.
    """
    try:
        config.validate()
    except ValueError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 2, None
    try:
        sdk = RecordingSdk() if dry_run else real_sdk()
    except RuntimeError as error:  # the vertex extra is not installed
        print(f"{command}: {error}", file=sys.stderr)
        return 2, None
    log = (lambda line: None) if dry_run else (lambda line: print(line, file=sys.stderr))
    try:
        result = function(config, sdk, log=log, **kwargs)
    except ValueError as error:  # our checks of the inputs (instance files, regions)
        print(f"{command}: {error}", file=sys.stderr)
        return 2, None
    except Exception as error:  # noqa: BLE001 - the SDK raises many types; report, exit 1
        print(f"{command}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1, None
    if dry_run:
        print(sdk.plan_json(project=config.project, region=config.region))
    return 0, result
