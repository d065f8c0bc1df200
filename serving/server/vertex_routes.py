"""Vertex AI's custom-container contract, on the REST port of our server.

Vertex AI runs a custom serving container with these environment variables
(https://cloud.google.com/vertex-ai/docs/predictions/custom-container-requirements):

* ``AIP_HTTP_PORT``: the port Vertex sends every request to. When it is set, the REST
  API is served there (it replaces ``--rest_api_port``) and the two routes below are
  answered on it, besides TF Serving's ``/v1/`` API;
* ``AIP_HEALTH_ROUTE``: 200 while the model has a version that can serve, 503 before
  (loading) and after;
* ``AIP_PREDICT_ROUTE``: ``POST {"instances": [...]}`` -> ``{"predictions": [...]}``,
  which is TF Serving's REST predict in row format: the request goes to the model's
  ``:predict`` as it is, so the instances are those of TF Serving
  (``{"b64": "..."}`` for image bytes, or ``{"image_bytes": {"b64": "..."}}``), and
  errors are TF Serving's ``{"error": "..."}`` (400 for a bad request). Vertex's
  ``parameters`` are ignored, as TF Serving ignores keys it does not know;
* ``AIP_STORAGE_URI``: where Vertex copied the model's ``artifact_uri``. When it is set it
  is the model's base path (the export's base directory, holding ``1/``, ``2/``...),
  in place of ``--model_base_path`` or ``--model_config_file``.

The model is the first one the server serves (``--model_name``, or the first of
``--model_config_file``).

:mod:`serving.server.options` reads the variables (``apply_environment``); this module
answers the two routes.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tensorflow_serving.apis import model_pb2

from serving.server.json_tensor import error_body
from serving.server.status import ServingError

if TYPE_CHECKING:
    from serving.server.rest_api import RestApi

_JSON = [("Content-Type", "application/json")]


class VertexRoutes:
    """Answers Vertex's health and predict routes; :meth:`route` returns None for others."""

    def __init__(self, rest_api: RestApi, health_route: str, predict_route: str) -> None:
        self.rest_api = rest_api
        self.health_route = health_route
        self.predict_route = predict_route

    @classmethod
    def from_environment(
        cls, rest_api: RestApi, environ: Mapping[str, str] = os.environ
    ) -> VertexRoutes | None:
        """The routes Vertex named (its defaults where it did not), or None off Vertex."""
        if not environ.get("AIP_HTTP_PORT"):
            return None
        # Vertex's defaults, for a model uploaded without routes.
        deployed = "/v1/endpoints/{}/deployedModels/{}".format(
            environ.get("AIP_ENDPOINT_ID", "ENDPOINT"),
            environ.get("AIP_DEPLOYED_MODEL_ID", "DEPLOYED_MODEL"),
        )
        return cls(
            rest_api,
            environ.get("AIP_HEALTH_ROUTE") or deployed,
            environ.get("AIP_PREDICT_ROUTE") or deployed + ":predict",
        )

    def model_name(self) -> str:
        models = self.rest_api.core.config.model_config_list.config
        return models[0].name if models else ""

    def route(self, method: str, target: str, body: bytes) -> tuple[int, list, bytes] | None:
        path = target.split("?", 1)[0]
        if path == self.health_route:
            return self._health()
        if path != self.predict_route:
            return None
        if method != "POST":
            return 405, [*_JSON, ("Allow", "POST")], error_body("Predictions take POST")
        model = urllib.parse.quote(self.model_name(), safe="")
        return self.rest_api.handle("POST", f"/v1/models/{model}:predict", body)

    def _health(self) -> tuple[int, list, bytes]:
        name = self.model_name()
        try:
            with self.rest_api.core.get_servable(model_pb2.ModelSpec(name=name)):
                return 200, list(_JSON), b"{}"
        except ServingError as error:
            return 503, list(_JSON), error_body(f"{name} cannot serve yet: {error.message}")
