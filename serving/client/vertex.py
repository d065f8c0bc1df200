"""``VertexClient``: the same ``predict`` for a model deployed on a Vertex AI endpoint."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from serving.client.batching import BatchEngine, RequestSize
from serving.client.client import VERTEX_MAX_REQUEST_BYTES, Images
from serving.client.errors import MalformedResponseError
from serving.client.http import JsonHttp, size_pool
from serving.client.rest import b64
from serving.client.results import Prediction, prediction_from_row
from serving.client.retry import RetryPolicy

_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_RESOURCE = re.compile(
    r"^projects/(?P<project>[^/:]+)/locations/(?P<region>[^/:]+)/endpoints/(?P<endpoint>[^/:]+)$"
)
_URL_PATH = re.compile(r"^/(?P<api>v1(?:beta1)?)/(?P<name>[^:]+)(?::(?P<verb>\w+))?$")
_INSTANCE_OVERHEAD = len('{"b64": ""}, ')


def vertex_predict_url(
    endpoint: str,
    project: str | None = None,
    region: str | None = None,
    base_url: str | None = None,
) -> str:
    """The ``:predict`` URL of an endpoint given as a full URL, a resource name or an id.

    ``base_url`` replaces ``https://{region}-aiplatform.googleapis.com`` (a private
    endpoint, a proxy or a test server).
    """
    endpoint = endpoint.strip()
    if endpoint.startswith(("https://", "http://")):
        scheme, rest = endpoint.split("://", 1)
        host, _, path = rest.partition("/")
        match = _URL_PATH.match("/" + path)
        if not match or not _RESOURCE.match(match["name"]):
            raise ValueError(
                "a Vertex endpoint URL looks like https://REGION-aiplatform.googleapis.com/v1/"
                f"projects/PROJECT/locations/REGION/endpoints/ID:predict, got {endpoint!r}"
            )
        if match["verb"] not in (None, "predict"):
            raise ValueError(f"the endpoint URL must end in :predict, got :{match['verb']}")
        root = base_url or f"{scheme}://{host}"
        return f"{root.rstrip('/')}/{match['api']}/{match['name']}:predict"
    match = _RESOURCE.match(endpoint)
    if match:
        project, region, endpoint = match["project"], match["region"], match["endpoint"]
    elif not endpoint or "/" in endpoint or ":" in endpoint:
        raise ValueError(
            "endpoint must be an endpoint id, projects/P/locations/R/endpoints/ID or the full "
            f"https://...:predict URL, got {endpoint!r}"
        )
    if not project or not region:
        raise ValueError("an endpoint id needs project and region (or pass the full endpoint URL)")
    root = base_url or f"https://{region}-aiplatform.googleapis.com"
    return (
        f"{root.rstrip('/')}/v1/projects/{project}/locations/{region}/endpoints/{endpoint}:predict"
    )


class VertexClient:
    """Client for a keras-vit model deployed on a Vertex AI endpoint.

    Sends ``{"instances": [{"b64": ...}]}`` and reads ``{"predictions": [...]}``, with the
    same batching, concurrency, retries and payload handling as :class:`ServingClient`;
    requests stay under Vertex's 1.5 MB limit.

    Args:
        endpoint: the full ``https://REGION-aiplatform.googleapis.com/v1/projects/P/locations/
            REGION/endpoints/ID:predict`` URL, a resource name ``projects/P/locations/R/
            endpoints/ID``, or an endpoint id (then ``project`` and ``region`` are needed).
        project: Google Cloud project; default the one of ``google.auth.default()``.
        region: the endpoint's region (``us-central1``...).
        credentials: ``google.auth`` credentials; default ``google.auth.default()``.
        session: a ready ``requests``-compatible session (e.g. an ``AuthorizedSession``);
            when given, ``credentials`` are not used.
        base_url: scheme and host to use instead of ``https://REGION-aiplatform.googleapis.com``.
        Other arguments as in :class:`ServingClient`.

    Example:
        >>> client = VertexClient("1234567890", project="my-project",
        ...                       region="europe-west4")  # doctest: +SKIP
        >>> client.predict(["cat.jpg", "dog.jpg"])  # doctest: +SKIP
    """

    def __init__(
        self,
        endpoint: str,
        project: str | None = None,
        region: str | None = None,
        credentials: Any = None,
        *,
        session: Any = None,
        base_url: str | None = None,
        timeout: float | None = 60.0,
        retries: int = 3,
        batch_size: int = 16,
        max_concurrency: int = 4,
        max_request_bytes: int | None = VERTEX_MAX_REQUEST_BYTES,
        downscale: bool = True,
        image_size: int = 224,
        image_format: str = "jpeg",
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive seconds or None, got {timeout}")
        if session is None and credentials is None:
            import google.auth

            credentials, default_project = google.auth.default(scopes=list(_SCOPES))
            project = project or default_project
        self.url = vertex_predict_url(endpoint, project, region, base_url)
        if session is None:
            from google.auth.transport.requests import AuthorizedSession

            session = size_pool(AuthorizedSession(credentials), max_concurrency)
        self.http = JsonHttp(session)
        self.timeout = timeout
        self.retry_policy = retry_policy or RetryPolicy(retries=retries)
        self.engine = BatchEngine(
            batch_size=batch_size,
            max_concurrency=max_concurrency,
            max_request_bytes=max_request_bytes,
            downscale=downscale,
            image_size=image_size,
            image_format=image_format,
        )
        self.size = RequestSize(len('{"instances": []}'), _INSTANCE_OVERHEAD, base64=True)
        self.last_deployed_model_id: str | None = None

    def __repr__(self) -> str:
        return f"VertexClient({self.url!r})"

    def _post(self, images: Sequence[bytes], timeout: float | None) -> list[Any]:
        body = json.dumps({"instances": [{"b64": b64(x)} for x in images]}).encode()
        reply = self.http.request("POST", self.url, timeout, body)
        if not isinstance(reply, dict) or not isinstance(reply.get("predictions"), list):
            keys = sorted(reply) if isinstance(reply, dict) else type(reply).__name__
            raise MalformedResponseError(f"expected {{'predictions': [...]}}, got {keys}")
        self.last_deployed_model_id = reply.get("deployedModelId", self.last_deployed_model_id)
        return reply["predictions"]

    def predict(self, images: Images, *, timeout: float | None = None) -> list[Prediction]:
        """Predictions for one image or a list of images, in input order."""
        deadline = self.timeout if timeout is None else timeout

        def send(batch: list[bytes]) -> list[Prediction]:
            rows = self.retry_policy.call(self._post, batch, deadline)
            for row in rows:
                if not isinstance(row, dict):
                    raise MalformedResponseError(
                        "each prediction must be an object of the model's outputs, got "
                        f"{type(row).__name__}"
                    )
            return [prediction_from_row(row) for row in rows]

        return self.engine.run(images, self.size, send)

    def close(self) -> None:
        self.engine.close()
        self.http.session.close()

    def __enter__(self) -> VertexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
