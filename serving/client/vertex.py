"""``VertexClient``: a :class:`ServingClient` whose transport is a Vertex AI endpoint."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from serving.client.batching import RequestSize
from serving.client.client import VERTEX_MAX_REQUEST_BYTES, ServingClient
from serving.client.errors import MalformedResponseError, UnimplementedError
from serving.client.http import JsonHttp, size_pool
from serving.client.rest import b64
from serving.client.retry import RetryPolicy

_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_RESOURCE = re.compile(
    r"^projects/(?P<project>[^/:]+)/locations/(?P<region>[^/:]+)/endpoints/(?P<endpoint>[^/:]+)$"
)
_URL_PATH = re.compile(r"^/(?P<api>v1(?:beta1)?)/(?P<name>[^:]+)(?::(?P<verb>\w+))?$")
_INSTANCE_OVERHEAD = len('{"b64": ""}, ')
DEFAULT_SIGNATURE = "serving_default"
_ONLY_PREDICT = "a Vertex AI endpoint answers :predict only; {what} is not available through it"


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


class VertexTransport:
    """A Vertex AI endpoint's ``:predict`` route, as a :class:`ServingClient` transport.

    Sends ``{"instances": [{"b64": ...}]}`` and reads ``{"predictions": [...]}``. An
    endpoint serves its model's default signature and nothing else: classify, metadata,
    status and other signatures raise :class:`UnimplementedError`.
    """

    def __init__(self, url: str, session: Any) -> None:
        self.url = url
        self.http = JsonHttp(session)
        self.last_deployed_model_id: str | None = None

    def predict_size(self, signature_name: str) -> RequestSize:
        return RequestSize(len('{"instances": []}'), _INSTANCE_OVERHEAD, base64=True)

    def predict(
        self, images: Sequence[bytes], signature_name: str, timeout: float | None
    ) -> list[Any]:
        if signature_name not in ("", DEFAULT_SIGNATURE):
            raise UnimplementedError(
                f"a Vertex AI endpoint serves its model's {DEFAULT_SIGNATURE} signature only, "
                f"not {signature_name!r}"
            )
        body = json.dumps({"instances": [{"b64": b64(x)} for x in images]}).encode()
        reply = self.http.request("POST", self.url, timeout, body)
        if not isinstance(reply, dict) or not isinstance(reply.get("predictions"), list):
            keys = sorted(reply) if isinstance(reply, dict) else type(reply).__name__
            raise MalformedResponseError(f"expected {{'predictions': [...]}}, got {keys}")
        self.last_deployed_model_id = reply.get("deployedModelId", self.last_deployed_model_id)
        return reply["predictions"]

    def classify_size(self, signature_name: str) -> RequestSize:
        return self.predict_size(signature_name)

    def classify(self, *args: object) -> list[Any]:
        raise UnimplementedError(_ONLY_PREDICT.format(what="the Classify API"))

    def metadata(self, timeout: float | None) -> dict[str, Any]:
        raise UnimplementedError(_ONLY_PREDICT.format(what="model metadata"))

    def status(self, timeout: float | None) -> list[Any]:
        raise UnimplementedError(_ONLY_PREDICT.format(what="model status"))

    def close(self) -> None:
        self.http.session.close()


class VertexClient(ServingClient):
    """Client for a keras-vit model deployed on a Vertex AI endpoint.

    A :class:`ServingClient` whose transport is the endpoint's ``:predict`` route
    (:class:`VertexTransport`): the same ``predict`` (``return_errors`` included), batching,
    concurrency, retries and payload handling; requests stay under Vertex's 1.5 MB limit.

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
            # google.auth's transport imports requests (0.13 s): Vertex calls only.
            import google.auth  # noqa: PLC0415

            credentials, default_project = google.auth.default(scopes=list(_SCOPES))
            project = project or default_project
        url = vertex_predict_url(endpoint, project, region, base_url)
        if session is None:
            from google.auth.transport.requests import AuthorizedSession  # noqa: PLC0415

            session = size_pool(AuthorizedSession(credentials), max_concurrency)
        super().__init__(
            url,
            protocol="vertex",
            transport=VertexTransport(url, session),
            timeout=timeout,
            retries=retries,
            batch_size=batch_size,
            max_concurrency=max_concurrency,
            max_request_bytes=max_request_bytes,
            downscale=downscale,
            image_size=image_size,
            image_format=image_format,
            retry_policy=retry_policy,
        )

    @property
    def url(self) -> str:
        return self.transport.url

    @property
    def last_deployed_model_id(self) -> str | None:
        """``deployedModelId`` of the last reply: which deployed model answered."""
        return self.transport.last_deployed_model_id

    def __repr__(self) -> str:
        return f"VertexClient({self.url!r})"
